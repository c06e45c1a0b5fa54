"""``voicecall demo``: a whole simulated call, no network."""

from __future__ import annotations

import asyncio
import sys

import click


@click.command("demo")
@click.option("--provider", type=click.Choice(["mock", "twilio"]), default="mock", show_default=True,
              help="Carrier to simulate: the mock carrier or the local Twilio emulator.")
@click.option("--json", "as_json", is_flag=True, help="Print only the final call records as JSON.")
@click.option("--speed", type=click.FloatRange(min=1, max=1000), default=50, show_default=True,
              help="How many times faster than real time the calls run.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Use this config's flows and responder; the carrier is still simulated.")
def demo(provider: str, as_json: bool, speed: float, config_path: str | None) -> None:
    """Run a notify call, a conversation and an inbound call on loopback and print what happened."""
    from voicecall.engine.demo import run_demo
    from voicecall.engine.errors import VoiceCallError

    settings = None
    if config_path:
        from voicecall.engine.cli.serve import load_or_exit

        settings = load_or_exit(config_path, as_json)
    try:
        code = asyncio.run(run_demo(sys.stdout, provider=provider, scale=1 / speed, as_json=as_json,
                                    settings=settings))
    except VoiceCallError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
