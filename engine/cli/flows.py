"""``voicecall flows list | show | validate | graph | simulate`` (DESIGN §5).

Only the flow package and the config loader are imported here; the
simulator (runtime, providers) is imported inside ``simulate`` alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from voicecall.engine.errors import Problem, ProblemsError, VoiceCallError
from voicecall.engine.flows import Flow, FlowLibrary, load_flow_file
from voicecall.engine.flows.library import FLOW_SUFFIXES

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="Config file (its flows.paths are part of the library).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _fail(message: str, *, code: str = "error", as_json: bool = False,
          problems: list[Problem] | None = None) -> NoReturn:
    for problem in problems or ():
        click.echo(problem.format(), err=True)
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "message": message}}))
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _settings(config_path: str | None, as_json: bool = False, *, listing: bool = False) -> Any:
    """The loaded Settings, or None when the config package is unavailable.
    ``listing``: a config with problems prints them on stdout and exits 1,
    as ``validate`` reports its findings."""
    try:
        from voicecall.engine.config import load_settings
    except ImportError:
        return None
    try:
        return load_settings(config_path)
    except ProblemsError as exc:
        first = exc.problems[0] if len(exc.problems) == 1 else None
        if listing and not (first and first.path == "$" and first.line is None):
            if as_json:
                click.echo(json.dumps({
                    "ok": False, "flows": 0,
                    "errors": [p.as_json() for p in exc.problems if not p.warning],
                    "warnings": [p.as_json() for p in exc.problems if p.warning]}, indent=2))
            else:
                for problem in exc.problems:
                    click.echo(problem.format())
            sys.exit(1)
        message = first.message if first and first.path == "$" else "invalid config"
        shown = None if first and first.path == "$" else exc.problems
        _fail(f"{message}: {config_path}" if config_path else message, code=exc.code,
              as_json=as_json, problems=shown)


def _library(settings: Any) -> FlowLibrary:
    paths = settings.get("flows.paths", ()) if settings is not None else ()
    return FlowLibrary([Path(p) for p in paths or ()])


def _flow(library: FlowLibrary, name: str, as_json: bool = False) -> Flow:
    try:
        return library.resolve(name)
    except ProblemsError as exc:
        code = exc.code
        lines = [p for p in exc.problems if p.file != "<flows>"]
        message = str(exc) if not lines else f"flow {name!r} has errors"
        _fail(message, code=code, as_json=as_json, problems=lines)


@click.group("flows")
def flows() -> None:
    """List, show, validate, draw and simulate flows."""


@flows.command("list")
@config_option
@json_option
def list_(config_path: str | None, as_json: bool) -> None:
    """List the flows: built-ins and those in flows.paths."""
    library = _library(_settings(config_path, as_json))
    rows = [{"name": f.name, "mode": f.mode, "kind": f.kind, "path": library.path_of(f.name),
             "description": " ".join(f.description.split())} for f in library.flows()]
    if as_json:
        click.echo(json.dumps({"flows": rows}, indent=2))
        return
    broken = {p.file for p in library.problems() if not p.warning}
    header = {"name": "NAME", "mode": "MODE", "kind": "KIND", "description": "DESCRIPTION",
              "path": "PATH"}
    shown = [header, *({**r, "description": _short(r["description"])} for r in rows)]
    keys = ("name", "mode", "kind", "description")
    widths = {k: max(len(r[k]) for r in shown) for k in keys}
    for row in shown:
        click.echo("  ".join(row[k].ljust(widths[k]) for k in keys) + "  " + row["path"])
    if broken:
        click.echo(f"warning: {len(broken)} flow file(s) have errors "
                   "(run: voicecall flows validate)", err=True)


def _short(text: str, width: int = 40) -> str:
    """First sentence, cut to ``width`` characters."""
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


@flows.command("show")
@click.argument("name")
@config_option
def show(name: str, config_path: str | None) -> None:
    """Print a flow's YAML source (a name or a path; even when it has errors)."""
    library = _library(_settings(config_path))
    try:
        path = library.path_of(name)
    except KeyError as exc:
        if not (name.endswith(FLOW_SUFFIXES) and Path(name).is_file()):
            _fail(str(exc), code="unknown_flow")
        path = name
    try:
        click.echo(Path(path).read_text(encoding="utf-8"), nl=False)
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}")


@flows.command("validate")
@click.argument("files", nargs=-1, type=click.Path(exists=False))
@config_option
@json_option
def validate(files: tuple[str, ...], config_path: str | None, as_json: bool) -> None:
    """Check flow files (default: the whole library); print every problem."""
    problems: list[Problem] = []
    count = 0
    if files:
        for path in _expand(files):
            try:
                flow = load_flow_file(path)
            except VoiceCallError as exc:
                problems += getattr(exc, "problems", [Problem(str(path), None, "$", str(exc))])
                continue
            problems += flow.warnings
            count += 1
    else:
        library = _library(_settings(config_path, as_json, listing=True))
        problems = library.problems()
        count = len(library.names())
    failed = any(not p.warning for p in problems)
    if as_json:
        click.echo(json.dumps({
            "ok": not failed, "flows": count,
            "errors": [p.as_json() for p in problems if not p.warning],
            "warnings": [p.as_json() for p in problems if p.warning],
        }, indent=2))
        sys.exit(1 if failed else 0)
    for problem in problems:
        click.echo(problem.format())
    if failed:
        sys.exit(1)
    click.echo(f"OK: {count} flow{'' if count == 1 else 's'}")


def _expand(files: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for name in files:
        path = Path(name)
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix in FLOW_SUFFIXES and p.is_file())
        else:
            out.append(path)
    return out


@flows.command("graph")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True, help="Diagram language.")
@config_option
def graph(name: str, fmt: str, config_path: str | None) -> None:
    """Draw a flow (a name, or a path to a flow file)."""
    from voicecall.engine.flows import to_dot, to_mermaid

    flow = _flow(_library(_settings(config_path)), name)
    click.echo((to_mermaid if fmt == "mermaid" else to_dot)(flow), nl=False)


@flows.command("simulate")
@click.argument("name")
@click.option("--scenario", "scenario", required=True, type=click.Path(dir_okay=False),
              help="Scenario file (what the callee does).")
@click.option("--provider", "provider", default=None, help="Carrier to render for (default mock).")
@config_option
@json_option
def simulate(name: str, scenario: str, provider: str | None, config_path: str | None,
             as_json: bool) -> None:
    """Run a flow against a scripted callee on virtual time; print the timeline."""
    try:
        from voicecall.engine.testing import simulate as run
    except ImportError as exc:
        _fail(f"simulation is not available: {exc}", code="unavailable", as_json=as_json)
    settings = _settings(config_path, as_json)
    try:
        result = run(_flow_arg(name), scenario, provider=provider, settings=settings)
    except VoiceCallError as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else exc.code, code=exc.code,
              as_json=as_json, problems=getattr(exc, "problems", None))
    except ValueError as exc:  # a scenario or callee script that cannot be followed
        _fail(str(exc), code="invalid_scenario", as_json=as_json)
    except OSError as exc:
        _fail(f"cannot read {exc.filename or scenario}: {exc.strerror or exc}", as_json=as_json)
    if as_json:
        click.echo(json.dumps(_result_json(result), indent=2, default=str))
    else:
        text = result.timeline_text()
        click.echo(text, nl=not text.endswith("\n"))


def _flow_arg(name: str) -> str:
    """A flow path on the command line is relative to the current directory
    (a path inside a scenario file is relative to that file)."""
    path = Path(name)
    if name.endswith(FLOW_SUFFIXES) or len(path.parts) > 1:
        return str(path.resolve())
    return name


def _result_json(result: Any) -> Any:
    """The simulation as one JSON document: record, timeline, documents."""
    if hasattr(result, "as_json"):
        return result.as_json()
    return {
        "record": result.record,
        "timeline": [{"at": at, "who": who, "what": what} for at, who, what in result.timeline],
        "documents": result.documents,
        "rpc": getattr(result, "rpc_results", []),
    }
