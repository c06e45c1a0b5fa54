"""A flow that needs what the configured carrier cannot do is refused before
any call: by validate-config (at the action's line) and by initiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from voicecall.engine.cli import cli
from voicecall.engine.errors import InvalidParams

STREAMER = """\
flow: streamer
mode: conversation
description: Streams audio.
initial: initiated
states:
  initiated: {}
  answered:
    do: [{stream: {url: "wss://example.com/media"}}]
  completed: {final: true}
transitions:
  - {on: call.answered, from: initiated, to: answered}
  - {on: call.ended, from: "*", to: completed}
"""


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "streamer.yaml").write_text(STREAMER)
    return flows


def test_validate_config_names_the_action_and_the_carrier(tmp_path: Path, flows_dir: Path) -> None:
    config = tmp_path / "voicecall.yaml"
    config.write_text(f"provider: mock\nflows:\n  paths: [{flows_dir}]\n")
    result = CliRunner().invoke(cli, ["validate-config", str(config)])
    assert result.exit_code == 1
    assert result.output == (f"{flows_dir}/streamer.yaml:8: $.states.answered.do[0]: "
                             "stream needs stream, which the mock carrier cannot do\n")


async def test_initiate_refuses_the_flow(rig_factory, flows_dir: Path) -> None:
    rig = await rig_factory(flows={"paths": [str(flows_dir)]})
    with pytest.raises(InvalidParams, match="flow 'streamer' cannot run on mock: stream needs stream"):
        await rig.runtime.initiate(to="+15550001111", flow="streamer")
    assert rig.runtime.sessions == {}
