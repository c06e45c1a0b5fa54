"""Configuration: loading (YAML, JSON, JSON5; plugin or OpenClaw shape), the
schema and semantic passes, and the frozen ``Settings`` (DESIGN §2)."""

from voicecall.engine.config.flowcheck import count_flows
from voicecall.engine.config.loader import (
    ConfigFileError,
    check_config,
    default_settings,
    load_settings,
    resolve_path,
)
from voicecall.engine.config.semantic import base_url_problem, is_local_host
from voicecall.engine.config.settings import FrozenDict, Settings, deep_merge, freeze, thaw
from voicecall.engine.errors import ConfigError, Problem

__all__ = [
    "ConfigError",
    "ConfigFileError",
    "FrozenDict",
    "Problem",
    "Settings",
    "base_url_problem",
    "check_config",
    "count_flows",
    "deep_merge",
    "default_settings",
    "freeze",
    "is_local_host",
    "load_settings",
    "resolve_path",
    "thaw",
]
