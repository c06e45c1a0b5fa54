"""voicecall: phone calls driven by YAML state machines."""
