"""Telnyx: Call Control v2 commands, Ed25519-signed JSON events, and a local emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voicecall.providers.telnyx.provider import TelnyxProvider

if TYPE_CHECKING:
    from voicecall.providers.telnyx.emulator import TelnyxEmulator

__all__ = ["TelnyxEmulator", "TelnyxProvider"]


def __getattr__(name: str) -> Any:
    # The emulator pulls in aiohttp's server: only tests, simulations and the demo need it.
    if name == "TelnyxEmulator":
        from voicecall.providers.telnyx.emulator import TelnyxEmulator

        return TelnyxEmulator
    raise AttributeError(name)
