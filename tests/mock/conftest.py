"""Fixtures for the mock carrier tests (the rig lives in mock_rig.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mock_rig import Rig, make_rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with make_rig(tmp_path) as r:
        yield r
        # Every request the carrier made in any test on this rig was correctly signed.
        assert r.runtime.refused == 0
