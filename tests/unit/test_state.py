"""A store writes each changed key once per checkpoint, and restores from what it wrote."""

from __future__ import annotations

from streams.state import Store


def _store() -> Store:
    return Store("test", "source", "source-changelog", encode=lambda v: str(v).encode(),
                 decode=lambda b: int(b.decode()))


def test_a_key_changed_many_times_between_two_checkpoints_is_written_once_with_its_latest_value():
    store = _store()
    store.open(0)
    rows = store.partition(0)
    for value in range(5):
        rows["card-1"] = value
        store.changed(0, ["card-1"])
    assert list(store.pending()) == [(0, b"card-1", b"4")]
    assert list(store.pending()) == []  # written: nothing pending until the next change


def test_a_deleted_key_is_written_as_a_tombstone_and_not_as_a_value():
    store = _store()
    store.open(2)
    store.partition(2)["card-1"] = 1
    store.changed(2, ["card-1"])
    store.delete(2, "card-1")
    assert list(store.pending()) == [(2, b"card-1", None)]
    assert "card-1" not in store.partition(2)


def test_restoring_replays_values_and_tombstones_in_order():
    store = _store()
    store.open(1)
    for key, value in ((b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"b", None)):
        store.apply(1, key, value)
    assert store.partition(1) == {"a": 3}
    assert list(store.pending()) == []  # restored values are already in the changelog


def test_a_dropped_partition_forgets_its_rows_and_its_pending_changes():
    store = _store()
    store.open(0)
    store.partition(0)["x"] = 1
    store.changed(0, ["x"])
    store.drop(0)
    assert list(store.pending()) == [] and store.size() == 0
