"""The alert state machine on its own: every transition, the ones it refuses, and that no
module outside `rules/alerts.py` assigns an alert's state."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dutyd.core.records import AlertState
from dutyd.rules.alerts import TRANSITIONS, Alert, InvalidTransition

P, F, R, OFF = AlertState.PENDING, AlertState.FIRING, AlertState.RESOLVED, AlertState.INACTIVE
ROOT = Path(__file__).resolve().parent.parent


def alert() -> Alert:
    return Alert("hot", (("target", "room-a"),), "critical")


def test_inactive_to_pending_to_firing_to_resolved_with_timestamps():
    a = alert()
    assert a.advance(True, 10.0, for_seconds=60) is OFF
    assert (a.state, a.active_since, a.fired_at) == (P, 10.0, None)
    assert a.advance(True, 69.0, for_seconds=60) is None  # `for` not run out
    assert a.advance(True, 70.0, for_seconds=60) is P
    assert (a.state, a.fired_at) == (F, 70.0)
    assert a.advance(False, 80.0, for_seconds=60) is F
    assert (a.state, a.resolved_at, a.duration(1000.0)) == (R, 80.0, 70.0)


def test_zero_for_fires_at_once_and_pending_that_clears_is_inactive():
    a = alert()
    assert a.advance(True, 5.0, for_seconds=0) is OFF and a.state is F
    b = alert()
    b.advance(True, 5.0, for_seconds=60)
    assert b.advance(False, 6.0, for_seconds=60) is P
    assert (b.state, b.active_since) == (OFF, None)


def test_keep_firing_for_delays_the_resolve():
    a = alert()
    a.advance(True, 0.0, 0)
    assert a.advance(False, 10.0, 0, keep_firing_for=30) is None and a.state is F
    assert a.advance(False, 30.0, 0, keep_firing_for=30) is F and a.state is R


def test_resolved_alert_that_holds_again_starts_a_new_outage():
    a = alert()
    a.advance(True, 0.0, 0)
    a.red_line_sent = True
    a.peak = 30.0
    a.advance(False, 10.0, 0)
    assert a.advance(True, 20.0, 60) is R
    assert (a.state, a.active_since, a.resolved_at, a.red_line_sent, a.peak) == (
        P,
        20.0,
        None,
        False,
        None,
    )


def test_resolve_clears_the_acknowledgement():
    from dutyd.rules.alerts import Ack

    a = alert()
    a.advance(True, 0.0, 0)
    a.ack = Ack("li.wei", "", 1.0)
    a.advance(False, 5.0, 0)
    assert a.ack is None


def test_resolve_announced_after_a_held_back_resolve():
    a = alert()
    a.advance(True, 0.0, 0)
    a.advance(False, 10.0, 0)  # resolved while muted
    assert a.resolve_announced(50.0) is R and (a.state, a.resolved_at) == (R, 10.0)
    b = alert()
    b.advance(True, 0.0, 0)
    b.advance(False, 10.0, 0)
    b.advance(True, 20.0, 60)  # pending again, then clears: inactive
    b.advance(False, 30.0, 60)
    assert b.state is OFF
    assert b.resolve_announced(40.0) is OFF and (b.state, b.resolved_at) == (R, 40.0)


def test_moves_outside_the_table_are_refused():
    a = alert()
    a.advance(True, 0.0, 60)
    with pytest.raises(InvalidTransition):
        a.resolve_announced(1.0)  # a pending alert was never paged: no resolve to announce
    assert a.state is P
    assert (P, R) not in TRANSITIONS and (OFF, F) not in TRANSITIONS


def _state_assignments(path: Path) -> list[str]:
    """`<x>.state = ...` (plain, augmented, annotated, or setattr(x, "state", ...)) in a file.
    `self.state` of classes outside rules/ is some other object's own state (a demo server's)."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(ROOT).as_posix()
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "state"
        ):
            found.append(f"{rel}:{node.lineno} setattr(..., 'state')")
        while targets:
            t = targets.pop()
            if isinstance(t, (ast.Tuple, ast.List)):  # a, alert.state = ...
                targets.extend(t.elts)
                continue
            sub = t
            if isinstance(sub, ast.Attribute) and sub.attr == "state":
                on_self = isinstance(sub.value, ast.Name) and sub.value.id == "self"
                if on_self and not rel.startswith("rules/"):
                    continue
                found.append(f"{rel}:{node.lineno}")
    return found


def test_only_the_state_machine_assigns_alert_state():
    files = [
        p
        for p in ROOT.rglob("*.py")
        if not any(
            part.startswith(".venv") or part in {"tests", "build", "node_modules"}
            for part in p.relative_to(ROOT).parts
        )
        and p.relative_to(ROOT).as_posix() != "rules/alerts.py"
    ]
    assert len(files) > 50  # the scan saw the package, not an empty tree
    offenders = [hit for p in files for hit in _state_assignments(p)]
    assert offenders == []


def test_the_scan_finds_an_assignment(tmp_path: Path):
    # The scan itself must catch what the rule forbids, or the test above proves nothing.
    rules = ROOT / "rules"
    probe = rules / "_probe_state_assign.py"
    probe.write_text("def f(alert, x):\n    alert.state = 'firing'\n    x, alert.state = 1, 2\n")
    try:
        assert _state_assignments(probe) == [
            "rules/_probe_state_assign.py:2",
            "rules/_probe_state_assign.py:3",
        ]
    finally:
        probe.unlink()
