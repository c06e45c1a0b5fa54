"""No input, however broken, makes the config checker raise (no traceback ever)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicecall.engine.config import check_config
from voicecall.engine.config.schema import config_schema

KEYS = [*sorted(config_schema()["properties"]), "port", "bind", "enabled", "plugins", "entries",
        "voice-call", "config", "messages", "tts", "providers", "openai", "apiKey", "zzz"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False),
                    st.sampled_from(["+15550001234", "twilio", "mock", "https://x.example/p",
                                     "${NOPE}", "", "edge", "allowlist"]), st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12)
DOCS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)


def _check(path: Path) -> None:
    result, problems = check_config(path, env={})
    assert (result is None) == any(not p.warning for p in problems)
    for problem in problems:
        assert problem.path.startswith("$") and problem.message


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(DOCS)
def test_random_documents(tmp_path: Path, doc: dict[str, object]) -> None:
    (tmp_path / "c.json").write_text(json.dumps(doc))
    _check(tmp_path / "c.json")


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("ab:{}[],'\"\n -+#/*\t1")), max_size=40),
       st.sampled_from(["c.yaml", "c.json", "c.json5"]))
def test_random_text(tmp_path: Path, text: str, name: str) -> None:
    (tmp_path / name).write_text(text)
    _check(tmp_path / name)
