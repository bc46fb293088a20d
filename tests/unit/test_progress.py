"""Per-partition progress: every record processed once, holes re-read rather than stepped over."""

import pytest

from streams.progress import DUPLICATE, HOLD, PROCESS, REREAD, PartitionProgress


def settled(at=0.0):
    p = PartitionProgress()
    p.rebalance_ended(at)
    return p


def run(progress, offsets, tp="p", now=1.0, handed_at=None):
    """Feed deliveries; record decisions, and mark processed what is processed."""
    out = []
    for offset in offsets:
        decision = progress.decide(tp, offset, now)
        if decision == PROCESS:
            progress.processed(tp, offset, handed_at if handed_at is not None else now)
        out.append(decision)
    return out


def test_consecutive_records_are_processed_and_a_record_handed_again_is_a_duplicate():
    assert run(settled(), [5, 6, 7, 7, 6]) == [PROCESS, PROCESS, PROCESS, DUPLICATE, DUPLICATE]


def test_a_hole_between_records_handed_over_since_the_last_rebalance_is_transaction_markers():
    p = settled(at=0.0)
    run(p, [10, 11])
    assert run(p, [13, 14, 16]) == [PROCESS, PROCESS, PROCESS]


def test_a_hole_across_a_rebalance_asks_for_a_reread_and_is_processed_in_order_after_it():
    p = settled(at=0.0)
    run(p, [10, 11], now=1.0)
    p.rebalance_started()
    p.rebalance_ended(2.0)
    assert run(p, [13, 14], now=3.0) == [REREAD, HOLD]
    assert p.first_missing("p") == 12
    # the re-read brings 12 (a real record) then 13 and 14 again
    assert run(p, [12, 13, 14], now=3.1) == [PROCESS, PROCESS, PROCESS]
    assert run(p, [16], now=3.2) == [PROCESS]  # handed over after the rebalance, as was 14


def test_a_hole_while_a_rebalance_is_under_way_is_read_again():
    p = settled(at=0.0)
    run(p, [10], now=1.0)
    p.rebalance_started()
    assert run(p, [12], now=1.5) == [REREAD]


def test_a_hole_after_a_record_handed_over_before_the_rebalance_ended_is_read_again():
    p = settled(at=0.0)
    p.rebalance_started()
    run(p, [10], now=1.0)  # handed over in the rebalance
    p.rebalance_ended(2.0)
    assert run(p, [12], now=3.0) == [REREAD]


def test_a_hole_that_holds_no_records_is_accepted_when_the_reread_brings_back_the_same_record():
    p = PartitionProgress()  # no rebalance has ended yet
    run(p, [10])
    assert run(p, [12, 13]) == [REREAD, HOLD]  # 11 is a transaction marker
    assert run(p, [12, 13]) == [PROCESS, PROCESS]


def test_a_reread_the_fetcher_overtook_is_sought_again_after_a_pause():
    p = PartitionProgress()
    run(p, [10], now=99.0)
    assert run(p, [12], now=100.0) == [REREAD]
    assert run(p, [20, 21], now=100.5) == [HOLD, HOLD]  # the records before 20 were not handed over
    assert p.overdue_rereads(100.9) == {}
    assert p.overdue_rereads(101.0) == {"p": 11}
    assert p.overdue_rereads(101.5) == {}  # timed afresh
    assert run(p, [11, 12], now=101.6) == [PROCESS, PROCESS]
    assert p.overdue_rereads(110.0) == {}


@pytest.mark.parametrize("first, decision", [(40, PROCESS), (38, DUPLICATE), (43, REREAD)])
def test_a_partition_new_to_this_worker_begins_at_the_committed_offset(first, decision):
    p = settled(at=0.0)
    p.start("p", 40)
    assert run(p, [first], now=5.0) == [decision]
    assert p.first_missing("p") == (41 if decision == PROCESS else 40)


def test_a_partition_the_group_never_committed_begins_with_its_first_record():
    p = settled()
    p.start("p", None)
    assert not p.knows("p")
    assert run(p, [7]) == [PROCESS]


@pytest.mark.parametrize("after_rebalance", [[3, 4, 5], [5, 6]])
def test_partitions_kept_through_a_rebalance_keep_their_progress_and_others_start_afresh(after_rebalance):
    p = settled()
    run(p, [3, 4, 5], tp="kept")
    run(p, [7, 8], tp="moved")
    p.keep_only({"kept"})
    assert run(p, after_rebalance, tp="kept")[0] == (DUPLICATE if after_rebalance[0] <= 5 else PROCESS)
    assert not p.knows("moved")
    assert p.has_processed("kept", 5) and not p.has_processed("kept", 9)


def test_the_offsets_to_commit_follow_the_last_record_processed_of_each_partition():
    p = settled()
    run(p, [3, 4, 5], tp="a")
    run(p, [10, 12], tp="b")  # 11: a transaction marker
    assert p.next_offsets() == {"a": 6, "b": 13}
    p.rebalance_started()
    assert run(p, [14], tp="b") == [REREAD]  # not processed: not committed
    assert p.next_offsets() == {"a": 6, "b": 13}
