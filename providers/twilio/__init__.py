"""Twilio: TwiML documents, the REST Calls API, signed webhooks, and a local emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voicecall.providers.twilio.provider import TwilioProvider

if TYPE_CHECKING:
    from voicecall.providers.twilio.emulator import TwilioEmulator

__all__ = ["TwilioEmulator", "TwilioProvider"]


def __getattr__(name: str) -> Any:
    # The emulator pulls in aiohttp's server and the SDK's validator: only tests and the demo need it.
    if name == "TwilioEmulator":
        from voicecall.providers.twilio.emulator import TwilioEmulator

        return TwilioEmulator
    raise AttributeError(name)
