"""Every worker follows all committed verdicts and the terminal table's changelog, in a thread of its own.

From them it keeps two things no single partition holds:
- every terminal's history (`TerminalHistory`), as the Faust table keyed by terminal last wrote it. The
  worker that holds a terminal's partition writes its row; every worker reads all rows here, as a
  global table would. The terminal features read it; they only look at events more than 7 days old,
  so a follower a second behind sees all they need.
- the verdicts of the last `horizon`, by transaction id, for the feedback join: as the bytes on the
  topic, decoded only when a label asks for one.

Both topics are read with read_committed, from their start: the changelog is compacted to about one
record per terminal, and the verdicts topic's retention bounds how long the rest takes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Sequence

import numpy as np

from core.features import TERMINAL_FEATURE_NAMES, TerminalHistory, empty_terminal_history, terminal_features
from streams.follow import TopicFollower

log = logging.getLogger(__name__)
PRUNE_EVERY = 50_000  # messages between two prunings of the verdicts


class VerdictFollower(TopicFollower):
    name = "verdict-follower"

    def __init__(self, bootstrap: str, verdicts_topic: str, terminal_changelog: str, horizon_seconds: float):
        super().__init__(bootstrap, (verdicts_topic, terminal_changelog), isolation_level="read_committed")
        self.horizon_seconds = horizon_seconds
        self.terminals: dict[str, TerminalHistory] = {}
        self.verdicts: OrderedDict[str, tuple[int, bytes]] = OrderedDict()  # id -> (written at, epoch ms; value)
        self.undecodable = 0
        self._lock = threading.Lock()
        self._since_prune = 0

    # What the agents ask.

    def terminal_features(self, terminal_ids: Sequence[str], timestamps: Sequence[int]) -> np.ndarray:
        """TERMINAL_FEATURE_NAMES for each (terminal, event time), one `terminal_features` call per terminal."""
        out = np.zeros((len(timestamps), len(TERMINAL_FEATURE_NAMES)), dtype=np.float64)
        rows: dict[str, list[int]] = {}
        for i, terminal_id in enumerate(terminal_ids):
            rows.setdefault(terminal_id, []).append(i)
        with self._lock:
            for terminal_id, at in rows.items():
                history = self.terminals.get(terminal_id)
                if history is not None:
                    out[at] = terminal_features(history["t"], history["f"], [timestamps[i] for i in at])
        return out

    def describe_terminal(self, terminal_id: str, at_ms: int) -> dict:
        """The terminal's known history and its features for a transaction at `at_ms`."""
        with self._lock:
            history = self.terminals.get(terminal_id) or empty_terminal_history()
            times, frauds = list(history["t"]), list(history["f"])
        return {"terminal_id": terminal_id, "at": at_ms, "transactions": len(times), "frauds": len(frauds),
                "features": dict(zip(TERMINAL_FEATURE_NAMES, terminal_features(times, frauds, [at_ms])[0].tolist()))}

    def status(self) -> dict:
        """For /health: caught up or still loading, and how much it holds."""
        with self._lock:
            return {"status": "ok" if self.caught_up.is_set() else "loading", "topics": list(self.topics),
                    "terminals": len(self.terminals), "verdicts_for_feedback": len(self.verdicts),
                    "undecodable_records": self.undecodable}

    def verdict(self, transaction_id: str) -> bytes | None:
        """The verdict's record as written (Confluent Avro), or None when none is known."""
        with self._lock:
            known = self.verdicts.get(transaction_id)
        return known[1] if known else None

    # What the topics say.

    def remember_verdict(self, transaction_id: str, written_at_ms: int, value: bytes) -> None:
        with self._lock:
            self.verdicts[transaction_id] = (written_at_ms, value)
            self.verdicts.move_to_end(transaction_id)

    def apply_terminal(self, key: bytes, value: bytes | None) -> None:
        """A changelog record of the terminal table: the terminal's whole history, or its deletion."""
        try:
            terminal_id = json.loads(key)
            history = None if value is None else json.loads(value)
            if history is not None and not (isinstance(history.get("t"), list) and isinstance(history.get("f"), list)):
                raise ValueError(f"not a terminal history: {value[:80]!r}")
        except (ValueError, TypeError, AttributeError) as exc:
            self.undecodable += 1
            log.warning("terminal changelog: undecodable record skipped: %s", exc)
            return
        with self._lock:
            if history is None:
                self.terminals.pop(terminal_id, None)
            else:
                self.terminals[terminal_id] = history

    def prune(self) -> None:
        """Forget verdicts written before the horizon."""
        with self._lock:
            expired = time.time() * 1000 - self.horizon_seconds * 1000
            while self.verdicts:
                written_at, _ = next(iter(self.verdicts.values()))
                if written_at >= expired:
                    break
                self.verdicts.popitem(last=False)

    def on_record(self, msg) -> None:
        if msg.topic() == self.topics[0]:
            if msg.key() is not None and msg.value() is not None:
                self.remember_verdict(msg.key().decode("utf-8", "replace"), msg.timestamp()[1], msg.value())
            self._since_prune += 1
        elif msg.key() is not None:
            self.apply_terminal(msg.key(), msg.value())

    def after_poll(self) -> None:
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.prune()
