"""Finding, reading and checking a config file; building ``Settings``.

Pipeline: read → parse (with lines) → unwrap the OpenClaw shape → ``${VAR}``
references → schema pass → semantic pass (on the valid part, so both passes
report) → flows → frozen ``Settings``. The environment is read here and
nowhere else (STYLE §6).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

from voicecall.engine.config import schema as schema_pass
from voicecall.engine.config import semantic
from voicecall.engine.config.flowcheck import check_flows
from voicecall.engine.config.schema import Issue, Path
from voicecall.engine.config.settings import Settings, deep_merge, freeze
from voicecall.engine.config.source import Parsed, SourceSyntaxError, format_of, parse
from voicecall.engine.errors import ConfigError, Problem
from voicecall.engine.yamlio import json_path

OPENCLAW_ENTRY: Path = ("plugins", "entries", "voice-call")
DEFAULT_FILE = "voicecall.yaml"
BUILTIN = "<built-in defaults>"

# (plugin config path, env var). Applied only where the config leaves it unset.
ENV_SECRETS: tuple[tuple[Path, str], ...] = (
    (("twilio", "accountSid"), "TWILIO_ACCOUNT_SID"),
    (("twilio", "authToken"), "TWILIO_AUTH_TOKEN"),
    (("telnyx", "apiKey"), "TELNYX_API_KEY"),
    (("telnyx", "connectionId"), "TELNYX_CONNECTION_ID"),
    (("telnyx", "publicKey"), "TELNYX_PUBLIC_KEY"),
    (("plivo", "authId"), "PLIVO_AUTH_ID"),
    (("plivo", "authToken"), "PLIVO_AUTH_TOKEN"),
    (("tunnel", "ngrokAuthToken"), "NGROK_AUTHTOKEN"),
    (("response", "apiKey"), "OPENAI_API_KEY"),
    (("streaming", "providers", "openai", "apiKey"), "OPENAI_API_KEY"),
)
# TTS vendor blocks get their key from the env only when the block exists.
ENV_TTS = (("openai", "OPENAI_API_KEY"), ("elevenlabs", "ELEVENLABS_API_KEY"))
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_OPENCLAW_HINTS = ("plugins", "messages", "agents", "channels", "gateway", "models", "session")


class ConfigFileError(ConfigError):
    """The config path is missing, a directory or unreadable (not a content problem)."""

    code = "config_unreadable"

    def __init__(self, file: str, reason: str):
        self.file, self.reason = file, reason
        super().__init__([Problem(file, None, "$", reason)])

    def __str__(self) -> str:
        return f"{self.reason}: {self.file}"


class _Doc:
    """Where each plugin-relative path lives in the file as written."""

    def __init__(self, file: str, parsed: Parsed, prefix: Path, messages_tts: Any):
        self.file, self.parsed, self.prefix = file, parsed, prefix
        self.messages_tts = messages_tts if isinstance(messages_tts, Mapping) else None
        self.own: Any = None

    def where(self, path: Path) -> Path:
        in_messages = (self.messages_tts is not None and path[:1] == ("tts",)
                       and not _has(self.own, path) and _has({"tts": self.messages_tts}, path))
        if in_messages:
            return ("messages", *path)
        return (*self.prefix, *path)

    def problem(self, issue: Issue, *, absolute: bool = False) -> Problem:
        full = issue.path if absolute else self.where(issue.path)
        line_path = full
        if issue.line_of is not None and full not in self.parsed.lines:
            line_path = self.where(issue.line_of)
        return Problem(self.file, self.parsed.line(line_path), json_path(full), issue.message,
                       issue.warning)


def _has(data: Any, path: Path) -> bool:
    for part in path:
        found = (isinstance(data, Mapping) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data))
        if not found:
            return False
        data = data[part]
    return True


def resolve_path(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> str | None:
    """``path``, else ``$VOICECALL_CONFIG``, else ``./voicecall.yaml`` if present, else None."""
    if path is not None:
        return os.fspath(path)
    if env.get("VOICECALL_CONFIG"):
        return env["VOICECALL_CONFIG"]
    return DEFAULT_FILE if os.path.isfile(DEFAULT_FILE) else None


def read_text(file: str) -> str:
    """The file's text; ConfigFileError when it cannot be read as a file."""
    fs = FsPath(file)
    if fs.is_dir():
        raise ConfigFileError(file, "config path is a directory, not a file")
    try:
        data = fs.read_bytes()
    except FileNotFoundError:
        raise ConfigFileError(file, "config file not found") from None
    except OSError as exc:
        raise ConfigFileError(file, f"cannot read config file ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigFileError(file, "config file is not UTF-8 text") from None


def check_config(path: str | os.PathLike[str] | None, *, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None,
                 ) -> tuple[Settings | None, list[Problem]]:
    """Check a config; return (Settings or None when any error, every problem and warning).

    Raises ConfigFileError when the path is missing, a directory or unreadable.
    """
    env = os.environ if env is None else env
    file = resolve_path(path, env)
    if file is None:
        return _check(BUILTIN, None, Parsed({}), env, overrides)
    text = read_text(file)
    if not text.strip():
        return None, [Problem(file, 1, "$", "config file is empty")]
    try:
        parsed = parse(text, format_of(file))
    except SourceSyntaxError as exc:
        return None, [Problem(file, exc.line, "$", str(exc))]
    if parsed.data is None:
        return None, [Problem(file, 1, "$", "config file is empty")]
    return _check(file, FsPath(file).resolve().parent, parsed, env, overrides)


def load_settings(path: str | os.PathLike[str] | None = None, *,
                  env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load and check a config (see ``check_config``); raise ConfigError listing
    every error. ``overrides`` deep-merge over the plugin config before checks."""
    settings, problems = check_config(path, env=env, overrides=overrides)
    if settings is None:
        raise ConfigError([p for p in problems if not p.warning])
    return settings


def default_settings(**overrides: Any) -> Settings:
    """Provider mock, every default: for tests and the demo. Reads no config file
    and no environment; raises ConfigError when ``overrides`` are invalid."""
    settings, problems = _check(BUILTIN, None, Parsed({}), {},
                                deep_merge({"provider": "mock"}, overrides))
    if settings is None:
        raise ConfigError([p for p in problems if not p.warning])
    return settings


def _check(file: str, base_dir: FsPath | None, parsed: Parsed, env: Mapping[str, str],
           overrides: Mapping[str, Any] | None) -> tuple[Settings | None, list[Problem]]:
    problems: list[Problem] = []
    doc, plugin, entry_enabled = _unwrap(file, parsed, problems)
    for dup_path, line in parsed.duplicates:
        problems.append(Problem(file, line, json_path(dup_path),
                                f"duplicate key {dup_path[-1]!r} (the last one wins)"))
    if plugin is None:
        return None, problems
    if overrides:
        plugin = deep_merge(plugin, _plain(overrides))
    doc.own = plugin
    messages_tts = doc.messages_tts
    issues: list[Issue] = []
    plugin = _expand_refs(plugin, (), env, issues)
    if messages_tts is not None:
        messages_tts = _expand_refs(messages_tts, ("tts",), env, issues)
    schema_issues = schema_pass.validate(plugin)
    if messages_tts is not None:
        tts_issues = schema_pass.validate(messages_tts, "tts")
        problems += [doc.problem(Issue(("messages", "tts", *i.path), i.message), absolute=True)
                     for i in tts_issues]
        messages_tts = schema_pass.prune(messages_tts, tts_issues)
    plugin = schema_pass.prune(plugin, schema_issues)
    own_tts = plugin.get("tts", {})
    if messages_tts is not None:
        plugin["tts"] = deep_merge(messages_tts, own_tts)
    plugin["enabled"] = bool(plugin.get("enabled", True) and entry_enabled)
    env_issues = _merge_env(plugin, env)
    issues += schema_issues + env_issues
    schema_pass.fill_defaults(plugin)
    plugin["store"] = _store(plugin.get("store"), base_dir, env)
    # A bad value from the environment already explains why the key is unset.
    env_paths = {issue.path for issue in env_issues}
    issues += [i for i in semantic.check(plugin, own_tts) if i.path not in env_paths]
    flow_issues, flow_problems, plugin["flows"]["paths"] = check_flows(plugin, base_dir)
    problems += [doc.problem(issue) for issue in issues + flow_issues] + flow_problems
    problems = _redact(_ordered(problems, file), parsed.data, env)
    if any(not p.warning for p in problems):
        return None, problems
    warnings = tuple(p for p in problems if p.warning)
    return Settings(freeze(plugin), None if file == BUILTIN else file, warnings), problems


def _plain(value: Any) -> Any:
    """Overrides from code may hold paths and tuples; the schema speaks JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _unwrap(file: str, parsed: Parsed, problems: list[Problem],
            ) -> tuple[_Doc, dict[str, Any] | None, bool]:
    """Split an OpenClaw document into the plugin config and ``messages.tts``."""
    data = parsed.data
    if not isinstance(data, dict) or not _is_openclaw(data):
        doc = _Doc(file, parsed, (), None)
        if not isinstance(data, dict):
            got = schema_pass.type_name(data)
            problems.append(Problem(file, parsed.line(()), "$",
                                    f"expected a mapping of settings, got {got}"))
            return doc, None, True
        return doc, data, True
    prefix: Path = ()
    node: Any = data
    for part in OPENCLAW_ENTRY:
        prefix = (*prefix, part)
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            where = json_path(prefix[:-1])
            problems.append(Problem(file, parsed.line(prefix), where,
                                    f"no {part!r} here: the voice-call plugin config belongs at "
                                    '$.plugins.entries["voice-call"].config'))
            return _Doc(file, parsed, prefix, None), None, True
        if not isinstance(node, dict):
            problems.append(Problem(file, parsed.line(prefix), json_path(prefix),
                                    f"expected object, got {schema_pass.type_name(node)}"))
            return _Doc(file, parsed, prefix, None), None, True
    entry = node
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(Problem(file, parsed.line((*prefix, "enabled")),
                                json_path((*prefix, "enabled")),
                                f"expected boolean, got {schema_pass.show(enabled, ())}"))
    for key in entry:
        if key not in ("enabled", "config", "hooks", "apiKey", "env"):
            hint = " (did you mean 'config'?)" if key.lower().startswith("conf") else ""
            problems.append(Problem(file, parsed.line((*prefix, key)), json_path((*prefix, key)),
                                    f"unknown key {key!r} in the plugin entry{hint}", True))
    config = entry.get("config", {})
    if not isinstance(config, dict):
        problems.append(Problem(file, parsed.line((*prefix, "config")),
                                json_path((*prefix, "config")),
                                f"expected object, got {schema_pass.type_name(config)}"))
        config = {}
    messages = data.get("messages")
    tts = messages.get("tts") if isinstance(messages, dict) else None
    located: tuple[tuple[tuple[str, ...], Any], ...] = ((("messages",), messages), (("messages", "tts"), tts))
    for spot, value in located:
        if value is not None and not isinstance(value, dict):
            problems.append(Problem(file, parsed.line(spot), json_path(spot),
                                    f"expected object, got {schema_pass.type_name(value)}"))
    doc = _Doc(file, parsed, (*prefix, "config"), tts)
    # Keep checking after an envelope error, so one run reports everything.
    return doc, dict(config), enabled is not False


def _is_openclaw(data: dict[str, Any]) -> bool:
    plugin_keys = schema_pass.config_schema()["properties"]
    return "plugins" in data or (
        any(k in data for k in _OPENCLAW_HINTS) and not any(k in plugin_keys for k in data))


def _expand_refs(node: Any, path: Path, env: Mapping[str, str], issues: list[Issue]) -> Any:
    """OpenClaw-style ``"${VAR}"`` values, taken from the environment."""
    if isinstance(node, dict):
        return {k: _expand_refs(v, (*path, k), env, issues) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_refs(v, (*path, i), env, issues) for i, v in enumerate(node)]
    if isinstance(node, str):
        match = _ENV_REF.match(node)
        if match:
            if env.get(match.group(1)):
                return env[match.group(1)]
            issues.append(Issue(path, f"environment variable {match.group(1)} is not set"))
    return node


def _merge_env(plugin: dict[str, Any], env: Mapping[str, str]) -> list[Issue]:
    issues: list[Issue] = []
    for path, var in ENV_SECRETS:
        if env.get(var) and not _has(plugin, path):
            _put(plugin, path, env[var])
    tts: dict[str, Any] = plugin["tts"] if isinstance(plugin.get("tts"), dict) else {}
    for vendor, var in ENV_TTS:
        for block in (tts.get(vendor), (tts.get("providers") or {}).get(vendor)):
            if isinstance(block, dict) and env.get(var) and not block.get("apiKey"):
                block["apiKey"] = env[var]
    number = env.get("TWILIO_FROM_NUMBER")
    if number and plugin.get("provider") == "twilio" and not plugin.get("fromNumber"):
        if re.fullmatch(schema_pass.E164_PATTERN, number):
            plugin["fromNumber"] = number
        else:
            issues.append(Issue(("fromNumber",), f"TWILIO_FROM_NUMBER {number!r} is not an "
                                                 "E.164 number (e.g. +15550001234)"))
    return issues


def _put(data: dict[str, Any], path: Path, value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(str(part), {})
    data[str(path[-1])] = value


def _store(value: Any, base_dir: FsPath | None, env: Mapping[str, str]) -> str:
    """``store`` as an absolute path: config (relative to the config file), else
    $VOICECALL_STATE_DIR, else ~/.voicecall."""
    if isinstance(value, str) and value:
        path = _expand_user(value, env)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return str(path)
    if env.get("VOICECALL_STATE_DIR"):
        return str(_expand_user(env["VOICECALL_STATE_DIR"], env))
    return str(_expand_user("~/.voicecall", env))


def _expand_user(text: str, env: Mapping[str, str]) -> FsPath:
    if text.startswith("~") and env.get("HOME"):
        return FsPath(env["HOME"]) / text[2:] if len(text) > 1 else FsPath(env["HOME"])
    return FsPath(text).expanduser()


def _redact(problems: list[Problem], data: Any, env: Mapping[str, str]) -> list[Problem]:
    """Belt and braces: a secret pasted under the wrong key must not be echoed either."""
    secrets = {value for _path, value in _secret_values(data)}
    secrets |= {env[var] for _path, var in ENV_SECRETS if env.get(var)}
    secrets |= {env[var] for _vendor, var in ENV_TTS if env.get(var)}
    secrets = {s for s in secrets if len(s) >= 6}  # short values would redact ordinary words
    if not secrets:
        return problems
    out = []
    for problem in problems:
        message = problem.message
        for secret in sorted(secrets, key=len, reverse=True):
            message = message.replace(secret, "***")
        out.append(Problem(problem.file, problem.line, problem.path, message, problem.warning))
    return out


def _secret_values(node: Any, path: Path = ()) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in schema_pass.SECRET_KEYS and isinstance(value, str):
                found.append(((*path, key), value))
            else:
                found += _secret_values(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _secret_values(value, (*path, index))
    return found


def _ordered(problems: list[Problem], file: str) -> list[Problem]:
    """Unique, the config file's own problems first (by line), then flow files."""
    seen: set[Problem] = set()
    unique = []
    for problem in problems:
        if problem not in seen:
            seen.add(problem)
            unique.append(problem)
    return sorted(unique, key=lambda p: (p.file != file, p.file, p.line or 0))
