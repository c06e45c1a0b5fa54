"""Reading a config file: YAML, JSON or JSON5 into data plus the line of every node.

YAML goes through ``voicecall.engine.yamlio`` (strings stay strings, lines known).
JSON and JSON5 are both parsed with ``json5`` — OpenClaw's own ``openclaw.json``
is JSON5 in practice (comments, trailing commas, bare keys) — and a small
structural scanner then walks the already-valid text to learn each key's line,
because neither ``json`` nor ``json5`` reports positions of parsed values.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path as FsPath

from voicecall.engine import yamlio

Path = tuple[str | int, ...]


class SourceSyntaxError(ValueError):
    """The text does not parse; ``line`` is 1-based when the parser knows it."""

    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.line = line


# A parsed document and the line of every node: the YAML loader's own type.
Parsed = yamlio.Located


def format_of(path: str | None) -> str:
    """``yaml``, ``json`` or ``json5`` from the file name (YAML when unsure)."""
    suffix = FsPath(path).suffix.lower() if path else ""
    if suffix == ".json":
        return "json"
    if suffix == ".json5":
        return "json5"
    return "yaml"


def parse(text: str, fmt: str) -> Parsed:
    """Parse ``text``; raise SourceSyntaxError (with a line when known)."""
    if fmt == "yaml":
        try:
            located = yamlio.load(text)
        except yamlio.YamlSyntaxError as exc:
            # An error "at the end of the stream" would name a line past the last one.
            last = max(1, len(text.rstrip("\n").splitlines()))
            raise SourceSyntaxError(str(exc), min(exc.line or 1, last)) from None
        return located
    return _parse_json5(text, "JSON" if fmt == "json" else "JSON5")


_JSON5_ERROR = re.compile(r"^<string>:(\d+) (.*)$", re.S)


def _parse_json5(text: str, label: str) -> Parsed:
    import json5  # only config files in JSON need it

    try:
        data = json5.loads(text)
    except ValueError as exc:
        message = str(exc)
        match = _JSON5_ERROR.match(message)
        if match:
            detail = match.group(2)
            raise SourceSyntaxError(f"invalid {label}: {detail[:1].lower()}{detail[1:]}",
                                    int(match.group(1))) from None
        raise SourceSyntaxError(f"invalid {label}: {message}", 1) from None
    except RecursionError:
        raise SourceSyntaxError(f"invalid {label}: nested too deeply", 1) from None
    parsed = Parsed(data)
    # Lines are best effort; a scanner miss must never hide the real problems.
    with contextlib.suppress(IndexError, ValueError, RecursionError):
        _Scanner(text, parsed).run()
    return parsed


_PUNCT = "{}[]:,"
_TOKEN = re.compile(
    r"""\s+|//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[{}\[\]:,]|[^\s{}\[\]:,/'"]+|/""",
    re.S)


class _Scanner:
    """Walk valid JSON5 text and record the line of every key and value."""

    def __init__(self, text: str, out: Parsed):
        self.tokens: list[tuple[str, int]] = []
        line = 1
        for match in _TOKEN.finditer(text):
            token = match.group(0)
            if not (token.isspace() or token.startswith(("//", "/*"))):
                self.tokens.append((token, line))
            line += token.count("\n")
        self.pos = 0
        self.out = out

    def run(self) -> None:
        self.value(())

    def next(self) -> tuple[str, int]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def value(self, path: Path) -> None:
        token, line = self.next()
        self.out.lines[path] = line
        if token == "{":
            self.members(path)
        elif token == "[":
            index = 0
            while self.tokens[self.pos][0] != "]":
                self.value((*path, index))
                index += 1
                if self.tokens[self.pos][0] == ",":
                    self.pos += 1
            self.pos += 1

    def members(self, path: Path) -> None:
        seen: set[str] = set()
        while self.tokens[self.pos][0] != "}":
            token, line = self.next()
            key = _key_text(token)
            if key in seen:
                self.out.duplicates.append(((*path, key), line))
            seen.add(key)
            if self.next()[0] != ":":
                raise ValueError("expected ':'")
            self.value((*path, key))
            self.out.lines[(*path, key)] = line
            if self.tokens[self.pos][0] == ",":
                self.pos += 1
        self.pos += 1


def _key_text(token: str) -> str:
    if token[:1] in "\"'":
        import json5

        return str(json5.loads(token))
    return token
