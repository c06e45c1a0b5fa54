"""Test helpers for users' own flows: run scenarios, snapshot rendered documents."""

from voicecall.engine.testing import *  # noqa: F403
