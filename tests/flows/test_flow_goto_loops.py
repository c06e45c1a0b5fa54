"""A chain of gotos that returns to its start would never wait for the caller:
the loader refuses it, and the engine refuses a too-long chain at run time."""

from __future__ import annotations

import pytest

from voicecall.engine.errors import FlowError
from voicecall.engine.flows import load_flow_text

LOOP = """\
flow: loopy
mode: conversation
description: Two states that hand the call to each other forever.
initial: initiated
states:
  initiated: {}
  a:
    do: [{say: hi}, {goto: b}]
  b:
    do: [{say: ho}, {goto: c}]
  c:
    do: [{goto: a}]
  completed: {final: true}
transitions:
  - {on: call.answered, from: initiated, to: a}
  - {on: call.ended, from: "*", to: completed}
"""


def test_a_goto_loop_is_reported_once_with_its_states() -> None:
    with pytest.raises(FlowError) as caught:
        load_flow_text(LOOP, file="loopy.yaml")
    assert [p.format() for p in caught.value.problems if not p.warning] == [
        "loopy.yaml:7: $.states.a: goto loop a -> b -> c -> a: these states never wait for the caller"]


def test_a_goto_chain_that_ends_in_a_waiting_state_is_fine() -> None:
    chain = LOOP.replace("    do: [{goto: a}]", "    do: [{gather: {input: dtmf}}]").replace(
        '  - {on: call.ended, from: "*", to: completed}',
        '  - {on: gather.timeout, from: c, to: c}\n  - {on: call.ended, from: "*", to: completed}')
    assert load_flow_text(chain, file="chain.yaml").states["a"].goto == "b"
