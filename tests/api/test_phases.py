"""The phase vocabulary: named once in api/status.py, and the same in the reference's tables."""

from __future__ import annotations

import pathlib
import re
from typing import get_args

from modelrelease.api import status
from modelrelease.api.crd import build_crd

REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "reference.md"
GROUPS = {
    "terminal": status.TERMINAL_PHASES,
    "in flight": status.IN_FLIGHT_PHASES,
    "active": status.ACTIVE_PHASES,
    "moving replicas": status.MOVING_REPLICAS_PHASES,
    "analysing": status.ANALYSING_PHASES,
    "stepping": status.STEPPING_PHASES,
    "failure": status.FAILURE_PHASES,
    "retryable": status.RETRYABLE_PHASES,
    "canary withdrawn": status.CANARY_WITHDRAWN_PHASES,
}


def _table_after(heading: str) -> list[list[str]]:
    text = REFERENCE.read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def _phases(cell: str) -> frozenset[str]:
    return frozenset(re.findall(r"`([A-Za-z]+)`", cell))


def test_the_reference_lists_every_phase_and_marks_the_terminal_ones() -> None:
    rows = _table_after("### Phases")
    listed = [_phases(row[0]) for row in rows]
    assert [next(iter(p)) for p in listed] == list(status.PHASES)
    terminal = {next(iter(_phases(row[0]))) for row in rows if "(terminal)" in row[1]}
    assert terminal == status.TERMINAL_PHASES


def test_the_reference_names_the_same_phase_groups_as_the_code() -> None:
    documented = {row[0]: _phases(row[1]) for row in _table_after("### Phase groups")}
    assert documented == GROUPS


def test_every_phase_is_in_flight_withdrawing_ended_or_invalid_and_only_one() -> None:
    parts = [status.IN_FLIGHT_PHASES, {"RollingBack"}, status.TERMINAL_PHASES, {"Invalid"}]
    for phase in status.PHASES:
        assert sum(phase in part for part in parts) == 1, phase


def test_the_groups_relate_as_their_meanings_say() -> None:
    # Active is what moves by itself: in flight, less the held Paused, plus the withdrawal.
    assert (status.IN_FLIGHT_PHASES - {"Paused"}) | {"RollingBack"} == status.ACTIVE_PHASES
    assert status.MOVING_REPLICAS_PHASES <= status.ACTIVE_PHASES
    assert status.ANALYSING_PHASES <= status.ACTIVE_PHASES & status.IN_FLIGHT_PHASES
    assert not status.STEPPING_PHASES & status.TERMINAL_PHASES
    assert status.RETRYABLE_PHASES == status.FAILURE_PHASES - status.ACTIVE_PHASES
    assert status.CANARY_WITHDRAWN_PHASES.isdisjoint(status.IN_FLIGHT_PHASES)
    assert all(group <= set(status.PHASES) for group in GROUPS.values())


def test_the_reference_names_the_pause_reasons_the_status_schema_allows() -> None:
    # The CRD's enum comes from PauseReason, so a reason written elsewhere would be refused by the API.
    row = next(line for line in REFERENCE.read_text(encoding="utf-8").splitlines()
               if line.startswith("| `pauseReason` |"))
    assert _phases(row.split("|")[3]) == frozenset(get_args(status.PauseReason))
    crd_status = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert crd_status["properties"]["pauseReason"]["enum"] == list(get_args(status.PauseReason))
