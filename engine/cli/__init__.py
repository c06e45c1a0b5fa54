"""The ``voicecall`` command. Verbs live in their own modules and are imported
only when used, so ``voicecall --help`` stays instant."""

from __future__ import annotations

import importlib
import importlib.util

import click

# verb -> (module, attribute, one-line help shown by --help without importing it)
VERBS: dict[str, tuple[str, str, str]] = {
    "validate-config": ("validate", "validate_config", "Check a config file and the flows it names."),
    "flows": ("flows", "flows", "List, show, validate, draw and simulate flows."),
    "serve": ("serve", "serve", "Run the runtime: webhooks, control API, timers."),
    "demo": ("demo", "demo", "Run whole simulated calls on the mock carrier."),
    "call": ("ops", "call", "Place an outbound call."),
    "start": ("ops", "start", "Place a call to --to (alias of call)."),
    "continue": ("ops", "continue_", "Say something and wait for the caller's answer."),
    "speak": ("ops", "speak", "Say something on a live call."),
    "dtmf": ("ops", "dtmf", "Send DTMF digits on a live call."),
    "end": ("ops", "end", "Hang up a call."),
    "status": ("status", "status", "Show one call, or the active calls."),
    "tail": ("status", "tail", "Follow call records as they change."),
    "latency": ("status", "latency", "Summarise turn latency."),
    "setup": ("setup", "setup", "Readiness checks."),
    "smoke": ("setup", "smoke", "Readiness checks, then optionally a real call."),
    "expose": ("setup", "expose", "Expose the webhook with Tailscale or ngrok."),
    "mcp": ("mcp", "mcp", "Serve the voice_call tool over MCP (stdio)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in VERBS if self._available(name)]

    def _available(self, name: str) -> bool:
        module = VERBS[name][0]
        return importlib.util.find_spec(f"{__name__}.{module}") is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in VERBS or not self._available(cmd_name):
            return None
        module, attr, _ = VERBS[cmd_name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, VERBS[name][2]) for name in self.list_commands(ctx)]
        if not rows:
            return
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="voicecall")
def cli() -> None:
    """voicecall: phone calls driven by YAML state machines."""


def main() -> None:
    cli(prog_name="voicecall")


if __name__ == "__main__":  # pragma: no cover
    main()
