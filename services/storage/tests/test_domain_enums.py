"""The domain enums carry the wire enums' names and numbers, so the edge translates by value."""

from __future__ import annotations

from enum import IntEnum

import pytest

from evalmesh.v1 import api_key_pb2, evaluation_pb2
from evalmesh_common.states import TERMINAL_STATES
from evalmesh_storage.domain import Fault, Priority, Role, State, Stream, TerminationCause

WireState = evaluation_pb2.Evaluation.State
PAIRS: list[tuple[type[IntEnum], list[tuple[str, int]], str]] = [
    (State, list(WireState.items()), "STATE_"),
    (Priority, list(evaluation_pb2.Priority.items()), "PRIORITY_"),
    (Stream, list(evaluation_pb2.OutputStream.items()), "OUTPUT_STREAM_"),
    (Fault, list(evaluation_pb2.Fault.items()), "FAULT_"),
    (TerminationCause, list(evaluation_pb2.TerminationCause.items()), "TERMINATION_CAUSE_"),
    (Role, list(api_key_pb2.Role.items()), "ROLE_"),
]


@pytest.mark.parametrize(("domain", "wire", "prefix"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_every_domain_enum_has_the_wire_enums_names_and_numbers(
    domain: type[IntEnum], wire: list[tuple[str, int]], prefix: str
) -> None:
    named = {name.removeprefix(prefix): number for name, number in wire}
    if "UNSPECIFIED" not in domain.__members__:
        del named["UNSPECIFIED"]
    assert {member.name: member.value for member in domain} == named


def test_the_terminal_states_are_every_state_after_running() -> None:
    after_running = {number for _, number in WireState.items() if number > WireState.STATE_RUNNING}
    assert len(after_running) == 7
    assert after_running == TERMINAL_STATES
