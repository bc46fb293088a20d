"""What a worker keeps from the verdicts and the terminal table's changelog it follows (no broker:
applied by hand)."""

import json
import time

import pytest

from core.features import DAY_MS, TERMINAL_FEATURE_NAMES, empty_terminal_history, remember_terminal
from streams.verdicts import VerdictFollower

T0 = 1_522_540_800_000


def follower(horizon_seconds=3600.0):
    return VerdictFollower("unused:9092", "verdicts", "terminal-changelog", horizon_seconds)


def changelog_record(terminal, history):
    """What Faust writes to the changelog of the terminal table (json key and value)."""
    return json.dumps(terminal).encode(), None if history is None else json.dumps(history).encode()


def test_the_terminal_table_s_latest_rows_make_the_terminal_features():
    f = follower()
    h = empty_terminal_history()
    for day in (0.5, 0.6, 0.7):
        remember_terminal(h, T0 + int(day * DAY_MS))
    f.apply_terminal(*changelog_record("T1", {"t": h["t"][:1], "f": []}))  # an older row, replaced
    remember_terminal(h, T0 + int(0.6 * DAY_MS), fraud=True)
    f.apply_terminal(*changelog_record("T1", h))
    rows = f.terminal_features(["T1", "T2", "T1"], [T0 + 8 * DAY_MS, T0 + 8 * DAY_MS, T0 + 7 * DAY_MS])
    one_day = dict(zip(TERMINAL_FEATURE_NAMES, rows[0]))
    assert one_day["terminal_nb_tx_1d"] == 3 and one_day["terminal_risk_1d"] == pytest.approx(1 / 3)
    assert rows[1].tolist() == [0.0] * 6          # an unknown terminal
    assert rows[2].tolist() == [0.0] * 6          # still inside the label delay
    assert f.describe_terminal("T1", T0 + 8 * DAY_MS)["frauds"] == 1
    f.apply_terminal(*changelog_record("T1", None))  # a deleted row
    assert f.terminal_features(["T1"], [T0 + 8 * DAY_MS]).tolist() == [[0.0] * 6]


@pytest.mark.parametrize("key, value", [
    (b"not json", b"{}"),
    (b'"T1"', b"[1, 2]"),
    (b'"T1"', b'{"t": [1]}'),
])
def test_an_undecodable_changelog_record_is_counted_and_changes_nothing(key, value):
    f = follower()
    f.apply_terminal(*changelog_record("T1", {"t": [T0], "f": []}))
    f.apply_terminal(key, value)
    assert f.undecodable == 1 and f.terminals == {"T1": {"t": [T0], "f": []}}


def test_verdicts_are_kept_as_written_for_the_feedback_join_until_the_horizon():
    f = follower(horizon_seconds=60)
    now = int(time.time() * 1000)
    f.remember_verdict("old", now - 120_000, b"old verdict")
    f.remember_verdict("new", now, b"new verdict")
    assert f.verdict("old") == b"old verdict" and f.verdict("nope") is None
    f.prune()
    assert f.verdict("old") is None and f.verdict("new") == b"new verdict"
    assert f.status()["verdicts_for_feedback"] == 1 and f.status()["status"] == "loading"
