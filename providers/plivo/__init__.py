"""Plivo: Plivo XML documents, the Call API through the SDK, V3-signed
webhooks, and a local emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voicecall.providers.plivo.provider import PlivoProvider

if TYPE_CHECKING:
    from voicecall.providers.plivo.emulator import PlivoEmulator

__all__ = ["PlivoEmulator", "PlivoProvider"]


def __getattr__(name: str) -> Any:
    # The emulator pulls in aiohttp's server and the SDK: only tests and the demo need it.
    if name == "PlivoEmulator":
        from voicecall.providers.plivo.emulator import PlivoEmulator

        return PlivoEmulator
    raise AttributeError(name)
