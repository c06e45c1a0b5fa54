"""Provider-neutral core of voicecall."""
