"""Which records of each partition this worker has processed, so that none is skipped or done twice.

faust can hand the stream a record again (its fetcher accepts an offset equal to the last it read)
and can drop one while a rebalance suspends its flow, and its commits then step over a one-offset
hole. So the agents ask here first: process the record, skip it (done already: its verdict is in the
partition's transaction), or re-read the partition from the first offset not processed, because
the record follows a hole. Holes also come from transaction markers, which hold no record: when a
re-read from the hole's start brings back the record that revealed it, the hole held no records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

PROCESS, DUPLICATE, REREAD, HOLD = "process", "duplicate", "reread", "hold"


@dataclass
class PartitionProgress:
    done: dict = field(default_factory=dict)  # partition -> highest offset processed
    rereading: dict = field(default_factory=dict)  # partition -> the offset that revealed a hole

    def decide(self, tp: Hashable, offset: int) -> str:
        """PROCESS, DUPLICATE, REREAD (seek to `first_missing(tp)`, then this record comes again) or
        HOLD (a re-read is under way: this record will come again)."""
        done = self.done.get(tp)
        if done is None or offset == done + 1:
            return PROCESS
        if offset <= done:
            return DUPLICATE
        revealed = self.rereading.get(tp)
        if revealed is None:
            self.rereading[tp] = offset
            return REREAD
        if offset <= revealed:  # the re-read's first record: what lay before it holds no records
            return PROCESS
        return HOLD

    def processed(self, tp: Hashable, offset: int) -> None:
        self.done[tp] = offset
        self.rereading.pop(tp, None)

    def first_missing(self, tp: Hashable) -> int:
        return self.done[tp] + 1

    def has_processed(self, tp: Hashable, offset: int) -> bool:
        done = self.done.get(tp)
        return done is not None and offset <= done

    def keep_only(self, assigned) -> None:
        """Forget partitions this worker no longer holds: another may process them meanwhile."""
        for tp in set(self.done) - set(assigned):
            del self.done[tp]
        for tp in set(self.rereading) - set(assigned):
            del self.rereading[tp]
