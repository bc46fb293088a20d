"""Per-partition progress: every record processed once, holes re-read rather than stepped over."""

import pytest

from streams.progress import DUPLICATE, HOLD, PROCESS, REREAD, PartitionProgress


def run(progress, offsets, tp="p", now=0.0):
    """Feed deliveries; record decisions, and mark processed what is processed."""
    out = []
    for offset in offsets:
        decision = progress.decide(tp, offset, now)
        if decision == PROCESS:
            progress.processed(tp, offset)
        out.append(decision)
    return out


def test_consecutive_records_are_processed_and_a_record_handed_again_is_a_duplicate():
    p = PartitionProgress()
    assert run(p, [5, 6, 7, 7, 6]) == [PROCESS, PROCESS, PROCESS, DUPLICATE, DUPLICATE]


def test_a_hole_without_a_rebalance_since_the_last_record_is_transaction_markers():
    p = PartitionProgress()
    run(p, [10, 11])
    assert run(p, [13, 14, 16]) == [PROCESS, PROCESS, PROCESS]


def test_a_record_after_a_hole_across_a_rebalance_asks_for_a_reread_and_is_processed_in_order_after_it():
    p = PartitionProgress()
    run(p, [10, 11])
    p.rebalancing()
    assert run(p, [13, 14]) == [REREAD, HOLD]
    assert p.first_missing("p") == 12
    # the re-read brings 12 (a real record) then 13 and 14 again
    assert run(p, [12, 13, 14]) == [PROCESS, PROCESS, PROCESS]


def test_a_hole_that_holds_no_records_is_accepted_when_the_reread_brings_back_the_same_record():
    p = PartitionProgress()
    run(p, [10])
    p.rebalancing()
    assert run(p, [12, 13]) == [REREAD, HOLD]  # 11 is a transaction marker
    assert run(p, [12, 13]) == [PROCESS, PROCESS]
    assert run(p, [15]) == [PROCESS]  # a processed record since: holes are markers again


def test_a_reread_the_fetcher_overtook_is_asked_for_again_after_a_pause():
    p = PartitionProgress()
    run(p, [10])
    p.rebalancing()
    assert run(p, [12], now=100.0) == [REREAD]
    assert run(p, [20, 21], now=100.5) == [HOLD, HOLD]  # the records before 20 were not handed over
    assert run(p, [22], now=101.0) == [REREAD]
    assert p.first_missing("p") == 11
    assert run(p, [11, 12], now=101.1) == [PROCESS, PROCESS]


def test_only_partitions_held_through_a_rebalance_are_suspected():
    p = PartitionProgress()
    run(p, [1], tp="a")
    p.rebalancing()
    run(p, [1], tp="b")
    assert run(p, [3], tp="b") == [PROCESS]
    assert run(p, [3], tp="a") == [REREAD]


@pytest.mark.parametrize("after_rebalance", [[3, 4, 5], [5, 6]])
def test_partitions_kept_through_a_rebalance_keep_their_progress_and_others_start_afresh(after_rebalance):
    p = PartitionProgress()
    run(p, [3, 4, 5], tp="kept")
    run(p, [7, 8], tp="moved")
    p.keep_only({"kept"})
    assert run(p, after_rebalance, tp="kept")[0] == (DUPLICATE if after_rebalance[0] <= 5 else PROCESS)
    assert run(p, [2], tp="moved") == [PROCESS]
    assert p.has_processed("kept", 5) and not p.has_processed("kept", 9)


def test_the_offsets_to_commit_follow_the_last_record_processed_of_each_partition():
    p = PartitionProgress()
    run(p, [3, 4, 5], tp="a")
    run(p, [10, 12], tp="b")  # 11: a transaction marker
    assert p.next_offsets() == {"a": 6, "b": 13}
    p.rebalancing()
    assert run(p, [14], tp="b") == [REREAD]  # not processed: not committed
    assert p.next_offsets() == {"a": 6, "b": 13}
