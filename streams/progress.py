"""Which records of each partition this worker has processed, so that none is skipped or done twice.

faust can hand the stream a record again (its fetcher accepts an offset equal to the last it read),
and while a rebalance suspends its flow it can drop records it had fetched, after which its commits
step over the hole. So the agents ask here first: process the record, skip it (done already: its
verdict is in the partition's transaction), or re-read the partition from the first offset not
processed, because the record follows a hole.

Offsets also leave holes where nothing was dropped: a Kafka transaction's commit marker takes an
offset, so every topic written under exactly-once has one after each transaction. faust drops records
only while a rebalance suspends its flow, so a hole between two records both handed over since the
last rebalance ended is markers, and is accepted. Any other hole is read again, and accepted as
markers when the re-read brings back the record that revealed it. A partition this worker starts
on begins at the group's committed offset. A re-read the fetcher overtakes (records it had already
fetched move its read position past the seek) is sought again, on a timer: the records it holds
back may be the last the partition has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

PROCESS, DUPLICATE, REREAD, HOLD = "process", "duplicate", "reread", "hold"
RESEEK_SECONDS = 1.0  # a re-read whose first record has not come back by then is asked for again
NEVER = float("-inf")


@dataclass
class PartitionProgress:
    done: dict = field(default_factory=dict)  # partition -> highest offset processed
    handed_at: dict = field(default_factory=dict)  # partition -> when that record was handed over
    rereading: dict = field(default_factory=dict)  # partition -> (offset that revealed a hole, when sought)
    settled_at: float | None = None  # when the last rebalance ended; None while one is under way

    def decide(self, tp: Hashable, offset: int, now: float = 0.0) -> str:
        """PROCESS, DUPLICATE, REREAD (seek to `first_missing(tp)`, then this record comes again) or
        HOLD (a re-read is under way: this record will come again). `now`: a monotonic clock."""
        done = self.done.get(tp)
        if done is None or offset == done + 1:
            return PROCESS
        if offset <= done:
            return DUPLICATE
        if self.settled_at is not None and self.handed_at.get(tp, NEVER) > self.settled_at:
            return PROCESS  # no rebalance since the last record: the hole is transaction markers
        if tp not in self.rereading:
            self.rereading[tp] = (offset, now)
            return REREAD
        revealed, _ = self.rereading[tp]
        if offset <= revealed:  # the re-read's first record: what lay before it holds no records
            return PROCESS
        return HOLD

    def overdue_rereads(self, now: float) -> dict:
        """Partition -> offset to seek to again, for re-reads whose first record has not come back
        within RESEEK_SECONDS; each is then timed afresh."""
        out = {}
        for tp, (revealed, sought_at) in list(self.rereading.items()):
            if now - sought_at >= RESEEK_SECONDS and tp in self.done:
                self.rereading[tp] = (revealed, now)
                out[tp] = self.done[tp] + 1
        return out

    def processed(self, tp: Hashable, offset: int, handed_at: float | None = None) -> None:
        """`handed_at`: when faust handed the record to the stream (monotonic clock)."""
        self.done[tp] = offset
        self.handed_at[tp] = NEVER if handed_at is None else handed_at
        self.rereading.pop(tp, None)

    def knows(self, tp: Hashable) -> bool:
        return tp in self.done

    def start(self, tp: Hashable, committed: int | None) -> None:
        """A partition this worker had no progress on begins at the group's committed offset (None:
        the group never committed one, and the first record handed over begins it)."""
        if committed is not None and tp not in self.done:
            self.done[tp] = committed - 1
            self.handed_at[tp] = NEVER

    def next_offsets(self) -> dict:
        """Partition -> the offset to commit: everything before it has been processed."""
        return {tp: done + 1 for tp, done in self.done.items()}

    def first_missing(self, tp: Hashable) -> int:
        return self.done[tp] + 1

    def has_processed(self, tp: Hashable, offset: int) -> bool:
        done = self.done.get(tp)
        return done is not None and offset <= done

    def rebalance_started(self) -> None:
        self.settled_at = None

    def rebalance_ended(self, now: float) -> None:
        self.settled_at = now

    def keep_only(self, assigned) -> None:
        """Forget partitions this worker no longer holds: another may process them meanwhile."""
        for tp in set(self.done) - set(assigned):
            del self.done[tp]
            self.handed_at.pop(tp, None)
        self.rereading = {tp: v for tp, v in self.rereading.items() if tp in assigned}
