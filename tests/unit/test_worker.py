"""The worker's reading of librdkafka's statistics and of record headers (the loop itself runs against the real broker in
tests/integration and tests/resilience)."""

from __future__ import annotations

import json

import pytest

from streams.topics import AWAITED
from streams.worker import awaited, group_state


def test_the_group_state_and_since_when_come_from_the_cgrp_statistics_in_milliseconds():
    stats = json.dumps({"name": "rdkafka#consumer-1", "type": "consumer",
                        "cgrp": {"state": "query-coord", "stateage": 42_500, "join_state": "init"}})
    state, since = group_state(stats, now=1_000.0)
    assert state == "query-coord"
    assert since == pytest.approx(957.5)


def test_a_client_without_a_group_has_an_unknown_group_state():
    assert group_state(json.dumps({"name": "rdkafka#producer-1", "type": "producer"}), now=5.0) == ("unknown", 5.0)


def test_a_record_is_awaited_only_when_it_carries_the_awaited_header():
    assert awaited([("traceparent", b"00-1"), (AWAITED, b"1")])
    assert not awaited([("traceparent", b"00-1")])
    assert not awaited(None) and not awaited([])
