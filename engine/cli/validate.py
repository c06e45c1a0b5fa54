"""``voicecall validate-config [PATH] [--json] [--config PATH]`` (DESIGN §8).

Problems go to stdout, one a line (``FILE:LINE: $.path: message``); a clean
config prints ``OK: FILE (provider P, N flows)``. Only config code is imported:
no aiohttp, SDKs or runtime, so the check stays instant.
"""

from __future__ import annotations

import json
import sys

import click

from voicecall.engine.config import ConfigFileError, check_config, count_flows
from voicecall.engine.config.loader import BUILTIN
from voicecall.engine.errors import Problem


@click.command("validate-config")
@click.argument("path", required=False, type=click.Path(dir_okay=True, exists=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=True, exists=False),
              help="Config file (the same as PATH).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def validate_config(path: str | None, config_path: str | None, as_json: bool) -> None:
    """Check a config file and the flows it names; print every problem."""
    if path and config_path and path != config_path:
        raise click.UsageError("give the config file once: PATH or --config, not both")
    try:
        settings, problems = check_config(path or config_path)
    except ConfigFileError as exc:
        _fail_unreadable(exc, as_json)
        return
    errors = [p for p in problems if not p.warning]
    warnings = [p for p in problems if p.warning]
    if as_json:
        click.echo(json.dumps({
            "ok": not errors,
            "errors": [p.as_json() for p in errors],
            "warnings": [p.as_json() for p in warnings],
        }, indent=2))
    else:
        for problem in problems:
            click.echo(problem.format())
        if settings is not None:
            source = settings.source or BUILTIN
            flows = count_flows(settings)
            noun = "flow" if flows == 1 else "flows"
            click.echo(f"OK: {source} (provider {settings.provider}, {flows} {noun})")
    if errors:
        sys.exit(1)


def _fail_unreadable(exc: ConfigFileError, as_json: bool) -> None:
    if as_json:
        problem = Problem(exc.file, None, "$", exc.reason)
        click.echo(json.dumps({
            "ok": False,
            "errors": [problem.as_json()],
            "warnings": [],
            "error": {"code": exc.code, "message": str(exc)},
        }, indent=2))
    click.echo(f"Error: {exc}", err=True)
    sys.exit(1)
