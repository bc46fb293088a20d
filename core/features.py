"""Features of a transaction: one definition for serving and training, in bounded state, O(1) per event.

Card features: a card's recent past is a `CardState` of fixed size, whatever the card's volume: hourly
buckets over its last 24 hours, daily buckets over its last 30 days (UTC), and the last-seen times of the
16 terminals it used most recently. `features_then_add` gives a transaction's card features and folds
the transaction in. The stream keeps one per card (`to_bytes`/`from_bytes` for its table); training
replays each card's history through the very same class (`feature_matrix`), so a model sees in
production exactly what it saw in training.

Terminal features (the handbook's, on a finer clock): the terminal's transactions in the w days
(4*w buckets of 6 hours, UTC) that end 29 buckets before the transaction's own bucket, their count and
the share of them labelled fraud. Labels take 7 days to arrive, and 29 buckets back is the nearest
window end at which every transaction read is more than 7 days older than the one scored. Then the
terminal's ordinary frauds in the 7- and 30-day windows: frauds whose amount was ordinary for their
card (at most twice its 30-day average), which the card does not explain and so point at the
terminal. A `TerminalCounts` holds a terminal's transactions, frauds and ordinary frauds per bucket:
the terminal agent adds to it,
every scorer reads snapshots of it. Training computes the same numbers for a whole history at once
(`terminal_matrix`).
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from bisect import bisect_left
from operator import attrgetter
from typing import Callable, Mapping, Sequence
from zlib import crc32

import numpy as np

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WINDOWS_DAYS = (1, 7, 30)
HISTORY_DAYS = max(WINDOWS_DAYS)
HISTORY_MS = HISTORY_DAYS * DAY_MS  # a card whose last event is older than this has nothing to say
NO_PREVIOUS_SECONDS = float(HISTORY_MS // 1000)
DISTINCT_TERMINALS_CAP = 16

CUSTOMER_FEATURE_NAMES: tuple[str, ...] = (
    "amount",
    "during_weekend",
    "during_night",
    "card_present",
    "channel_ecom",
    "customer_nb_tx_1d",
    "customer_avg_amount_1d",
    "customer_nb_tx_7d",
    "customer_avg_amount_7d",
    "customer_nb_tx_30d",
    "customer_avg_amount_30d",
    "seconds_since_previous",
    "amount_zscore_30d",
    "distinct_terminals_1d",
    "amount_to_avg_30d",
    "max_amount_to_avg_14d",
)
N_CUSTOMER_FEATURES = len(CUSTOMER_FEATURE_NAMES)
TERMINAL_DELAY_DAYS = 7  # a fraud label is known this long after its transaction
TERMINAL_BUCKET_MS = 6 * HOUR_MS
TERMINAL_BUCKETS_PER_DAY = DAY_MS // TERMINAL_BUCKET_MS
# A terminal window ends this many buckets before the transaction's own: the fewest that keep every
# transaction it reads more than 7 days older than the one scored, wherever in its bucket that falls.
TERMINAL_DELAY_BUCKETS = TERMINAL_DELAY_DAYS * TERMINAL_BUCKETS_PER_DAY + 1
# Buckets a terminal keeps (45 days): the 148 its features read, plus a margin for events that arrive late.
TERMINAL_RING_BUCKETS = 45 * TERMINAL_BUCKETS_PER_DAY
# The days before a transaction's day D that any feature reads: a terminal's 30-day window starts 148
# buckets before the transaction's, on day D-37 at the earliest.
LOOKBACK_DAYS = TERMINAL_DELAY_DAYS + HISTORY_DAYS
# A fraud label whose transaction's amount was at most this many times its card's 30-day average
# (`amount_to_avg_30d`) is "ordinary" for the card: nothing about the card explains it, so it points at
# the terminal (a compromised terminal's frauds look like any other transaction of their cards).
ORDINARY_FRAUD_RATIO = 2.0
ORDINARY_FRAUD_WINDOWS_DAYS = (7, 30)
TERMINAL_FEATURE_NAMES: tuple[str, ...] = tuple(
    f"terminal_{kind}_{days}d" for days in WINDOWS_DAYS for kind in ("nb_tx", "risk")) + tuple(
    f"terminal_ordinary_frauds_{days}d" for days in ORDINARY_FRAUD_WINDOWS_DAYS)
FEATURE_NAMES: tuple[str, ...] = CUSTOMER_FEATURE_NAMES + TERMINAL_FEATURE_NAMES
N_FEATURES = len(FEATURE_NAMES)
# Upstream numeric attributes (the Transaction's `attributes` map) a model was trained with follow
# FEATURE_NAMES, each as `attribute_<key>`; a transaction without the key gives NaN (missing).
ATTRIBUTE_PREFIX = "attribute_"
# The fraud handbook's 15 features, the published baseline's: ours without the extra ones.
HANDBOOK_FEATURE_NAMES: tuple[str, ...] = tuple(
    name for name in FEATURE_NAMES
    if name not in ("card_present", "channel_ecom", "seconds_since_previous", "amount_zscore_30d",
                    "distinct_terminals_1d", "amount_to_avg_30d", "max_amount_to_avg_14d")
    and not name.startswith("terminal_ordinary_frauds_"))

HOURS_PER_DAY = 24
if array("I").itemsize != 4 or array("q").itemsize != 8:
    raise ImportError("core.features needs 4-byte 'I' and 8-byte 'q' arrays")
_LONGEST_RING = max(2 * HISTORY_DAYS, TERMINAL_RING_BUCKETS)
_ZEROS = {"I": array("I", bytes(4 * _LONGEST_RING)), "d": array("d", bytes(8 * _LONGEST_RING))}
_BIG_ENDIAN = sys.byteorder == "big"


def calendar_features(timestamp_ms: int) -> tuple[float, float]:
    """(during_weekend, during_night) in UTC: Saturday/Sunday, and hours 0 to 6 inclusive."""
    days = timestamp_ms // DAY_MS
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday == 0
    hour = (timestamp_ms % DAY_MS) // HOUR_MS
    return float(weekday >= 5), float(hour <= 6)


def _buckets(ring: array, first: int, last: int) -> array:
    """The buckets of absolute indices first..last (inclusive, within the ring), in that order."""
    size = len(ring)
    a, b = first % size, last % size + 1
    return ring[a:b] if a < b else ring[a:] + ring[:b]


def _clear(ring: array, first: int, last: int) -> None:
    """Zero the buckets of absolute indices first..last (inclusive): the ring's head moved past them."""
    size = len(ring)
    if first == last:
        ring[first % size] = 0
        return
    zeros = _ZEROS[ring.typecode]
    if last - first + 1 >= size:
        ring[:] = zeros[:size]
        return
    a, b = first % size, last % size + 1
    if a < b:
        ring[a:b] = zeros[: b - a]
    else:
        ring[a:] = zeros[: size - a]
        ring[:b] = zeros[:b]


def _little_endian(values: array) -> bytes:
    if _BIG_ENDIAN:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _from_little_endian(typecode: str, data: bytes) -> array:
    values = array(typecode)
    values.frombytes(data)
    if _BIG_ENDIAN:
        values.byteswap()
    return values


_NEVER_MS = -HISTORY_MS  # "last event" of a card with none: every real event is 30+ days after it
_CARD_VERSION = 3  # 3 added the days' highest amount-to-average ratios; a version 2 state reads as none
MAX_RATIO_DAYS = 14  # max_amount_to_avg_14d reads the days d-13..d
# version, last event (epoch ms), reference amount, hours held, terminals held, then the window totals:
# counts over 1, 7 and 30 days, sums of amounts over 1, 7 and 30 days, sum of squares over 30 days.
_CARD_HEADER = struct.Struct("<BqdBBIIIdddd")
_CARD_TOTALS = ("_n_1d", "_n_7d", "_n_30d", "_sum_1d", "_sum_7d", "_sum_30d", "_sq_30d")
_card_totals = attrgetter(*_CARD_TOTALS)
_CARD_DAYS_BYTES = HISTORY_DAYS * (4 + 8 + 8)
_CARD_MAX_RATIO_BYTES = HISTORY_DAYS * 8
CARD_STATE_MAX_BYTES = (_CARD_HEADER.size + HOURS_PER_DAY * 3 * 8 + _CARD_DAYS_BYTES + _CARD_MAX_RATIO_BYTES
                        + DISTINCT_TERMINALS_CAP * (4 + 8))
_SQUARES = HISTORY_DAYS  # where a day's sum of squares sits in `_day_sums`, after its sum
_HASH = struct.Struct("<I")


class CardState:
    """A card's recent past in fixed space, and its card features (CUSTOMER_FEATURE_NAMES order).

    Hourly buckets (UTC hour t // 1 h) cover the 24 hours up to the latest event seen, and daily buckets
    (t // 1 day, a ring indexed modulo 30) its 30 days. Per hour: count and sum of amounts, kept only
    for the hours that have some, since most cards pay a few times a day. Per day: count, sum of
    amounts, sum of squared differences from a reference amount (the card's first amount since its
    days were last empty: a card that always pays the same amount then has a variance of exactly zero,
    and the squares stay small), and the highest amount-to-30-day-average ratio of its events (a card
    paying far above its habits a few days ago is likely compromised today). Running totals of the 1-,
    7- and 30-day windows make an event in order cost the same whatever the card's volume: what enters
    a window is added, what leaves it subtracted, and an emptied window restarts from exactly zero.
    The 16 terminals used most recently are kept by a 32-bit hash of their id, most recent first, with
    their last-seen times; one last seen two days before the latest event is dropped, as no event up to
    a day late can count it.

    A late event is folded into its buckets while they are still held, and its windows read the buckets
    up to its own hour or day; an event older than the buckets held counts nowhere.
    """

    __slots__ = ("_last", "_reference", "_hours", "_day_n", "_day_sums", "_day_max", "_terminals",
                 "_terminal_seen") + _CARD_TOTALS

    def __init__(self) -> None:
        self._last = _NEVER_MS
        self._reference = 0.0
        self._hours = array("d")  # (hour, count, sum) of each hour held with transactions, ascending
        self._day_n = array("I", bytes(4 * HISTORY_DAYS))
        self._day_sums = array("d", bytes(8 * 2 * HISTORY_DAYS))  # sums, then sums of squares
        self._day_max = array("d", bytes(8 * HISTORY_DAYS))  # each day's highest amount_to_avg_30d
        self._terminals = bytearray()     # crc32 of each terminal id (4 bytes), most recently seen first
        self._terminal_seen = array("q")  # minus its last-seen time: ascending, so bisect finds a cutoff
        self._n_1d = self._n_7d = self._n_30d = 0
        self._sum_1d = self._sum_7d = self._sum_30d = self._sq_30d = 0.0

    @property
    def last_event_ms(self) -> int | None:
        """The latest event time folded in, or None for a card with none."""
        return None if self._last == _NEVER_MS else self._last

    def features_then_add(self, txn: Mapping) -> list[float]:
        """The card features of `txn` (its windows include it), then fold it into the state."""
        t = txn["timestamp"]
        amount = float(txn["amount"])
        hour = t // HOUR_MS
        day = hour // HOURS_PER_DAY
        last = self._last
        head_hour = last // HOUR_MS
        if hour > head_hour:
            self._move_to(hour, head_hour)
            head_hour = hour
        in_order = hour == head_hour
        if in_order:  # the windows are the running totals
            n_1d, sum_1d = self._n_1d, self._sum_1d
            n_7d, sum_7d = self._n_7d, self._sum_7d
            n_before, sum_before, sq_before = self._n_30d, self._sum_30d, self._sq_30d
        else:  # late: the buckets up to its own hour and day that are still held
            n_1d, sum_1d = self._late_hours(hour)
            n_7d, sum_7d, _ = self._late_days(day - 6, day, head_hour // HOURS_PER_DAY)
            n_before, sum_before, sq_before = self._late_days(day - (HISTORY_DAYS - 1), day, head_hour // HOURS_PER_DAY)

        zscore = 0.0
        if n_before >= 2:
            shift = sum_before - n_before * self._reference
            variance = (sq_before - shift * shift / n_before) / (n_before - 1)
            if variance > 0.0:
                std = math.sqrt(variance)
                if std > 1e-9:
                    zscore = (amount - sum_before / n_before) / std
        gap = t - last
        seconds = 0.0 if gap <= 0 else min(gap, HISTORY_MS) / 1000.0
        terminal = txn["terminal_id"]
        distinct = self._distinct_terminals_then_add(
            crc32(terminal.encode() if terminal.__class__ is str else str(terminal).encode()), t)

        avg_30d = (sum_before + amount) / (n_before + 1.0)
        ratio = amount / avg_30d if avg_30d > 0.0 else 1.0
        day_max = self._day_max
        first_day = max(day - (MAX_RATIO_DAYS - 1), head_hour // HOURS_PER_DAY - (HISTORY_DAYS - 1))
        max_ratio = max(ratio, max(_buckets(day_max, first_day, day))) if first_day <= day else ratio

        if in_order:
            if ratio > day_max[day % HISTORY_DAYS]:
                day_max[day % HISTORY_DAYS] = ratio
            hours = self._hours
            if hours and hours[-3] == hour:
                hours[-2] += 1.0
                hours[-1] += amount
            else:
                hours.extend((hour, 1.0, amount))
            if not n_before:  # nothing held: a new reference amount
                self._reference = amount
            deviation = amount - self._reference
            at = day % HISTORY_DAYS
            self._day_n[at] += 1
            sums = self._day_sums
            sums[at] += amount
            sums[at + _SQUARES] += deviation * deviation
            self._n_1d, self._sum_1d = n_1d + 1, sum_1d + amount
            self._n_7d, self._sum_7d = n_7d + 1, sum_7d + amount
            self._n_30d, self._sum_30d = n_before + 1, sum_before + amount
            self._sq_30d = sq_before + deviation * deviation
            if t > last:
                self._last = t
        else:
            self._add_late(hour, amount, ratio, head_hour)

        n_1d += 1.0
        n_7d += 1.0
        n_30d = n_before + 1.0
        weekend = 1.0 if (day + 3) % 7 >= 5 else 0.0  # as calendar_features
        night = 1.0 if hour % HOURS_PER_DAY <= 6 else 0.0
        return [amount, weekend, night,
                1.0 if txn.get("card_present", True) else 0.0, 1.0 if txn.get("channel") == "ECOM" else 0.0,
                n_1d, (sum_1d + amount) / n_1d, n_7d, (sum_7d + amount) / n_7d,
                n_30d, avg_30d, seconds, zscore, distinct + 0.0, ratio, max_ratio]

    def _move_to(self, hour: int, head_hour: int) -> None:
        """Move the head from `head_hour` on to the later `hour`: take what leaves each window out of
        its total, and forget the hours and clear the days that leave the state."""
        hours = self._hours
        if hours and hours[0] <= hour - HOURS_PER_DAY:
            if hours[-3] <= hour - HOURS_PER_DAY:
                self._n_1d, self._sum_1d = 0, 0.0
                del hours[:]
            else:
                end = 3
                while hours[end] <= hour - HOURS_PER_DAY:
                    end += 3
                if end == 3:
                    self._n_1d -= int(hours[1])
                    self._sum_1d -= hours[2]
                else:
                    self._n_1d -= int(sum(hours[1:end:3]))
                    self._sum_1d -= sum(hours[2:end:3])
                del hours[:end]
        day, head_day = hour // HOURS_PER_DAY, head_hour // HOURS_PER_DAY
        if day == head_day:
            return
        day_n, sums = self._day_n, self._day_sums
        if day - head_day >= HISTORY_DAYS:
            if self._n_30d:
                _clear(day_n, 0, HISTORY_DAYS - 1)
                _clear(sums, 0, 2 * HISTORY_DAYS - 1)
                _clear(self._day_max, 0, HISTORY_DAYS - 1)
            self._n_7d = self._n_30d = 0
            self._sum_7d = self._sum_30d = self._sq_30d = 0.0
            return
        n_7d, sum_7d, n_30d, sum_30d, sq_30d = self._n_7d, self._sum_7d, self._n_30d, self._sum_30d, self._sq_30d
        if day - head_day >= 7:
            n_7d, sum_7d = 0, 0.0
        for new_day in range(head_day + 1, day + 1):
            leaving = (new_day - 7) % HISTORY_DAYS  # that day leaves the 7-day window
            if n_7d and day_n[leaving]:
                n_7d -= day_n[leaving]
                sum_7d = sum_7d - sums[leaving] if n_7d else 0.0
            at = new_day % HISTORY_DAYS  # day new_day - 30 leaves the ring: its bucket is new_day's
            if day_n[at]:
                n_30d -= day_n[at]
                if n_30d:
                    sum_30d -= sums[at]
                    sq_30d -= sums[at + _SQUARES]
                else:
                    sum_30d = sq_30d = 0.0
                day_n[at] = 0
                sums[at] = sums[at + _SQUARES] = self._day_max[at] = 0.0
        self._n_7d, self._sum_7d, self._n_30d, self._sum_30d, self._sq_30d = n_7d, sum_7d, n_30d, sum_30d, sq_30d

    def _add_late(self, hour: int, amount: float, ratio: float, head_hour: int) -> None:
        """Fold in an event earlier than the latest hour: into its hour and day while they are held, and
        into the totals of the windows of the latest event that cover them."""
        if hour > head_hour - HOURS_PER_DAY:
            hours, at = self._hours, 0
            while at < len(hours) and hours[at] < hour:
                at += 3
            if at < len(hours) and hours[at] == hour:
                hours[at + 1] += 1.0
                hours[at + 2] += amount
            else:
                hours[at:at] = array("d", (hour, 1.0, amount))
            self._n_1d += 1
            self._sum_1d += amount
        day, head_day = hour // HOURS_PER_DAY, head_hour // HOURS_PER_DAY
        if day > head_day - HISTORY_DAYS:  # the ring holds something: the head's day at least
            deviation = amount - self._reference
            at = day % HISTORY_DAYS
            self._day_n[at] += 1
            self._day_sums[at] += amount
            self._day_sums[at + _SQUARES] += deviation * deviation
            if ratio > self._day_max[at]:
                self._day_max[at] = ratio
            self._n_30d += 1
            self._sum_30d += amount
            self._sq_30d += deviation * deviation
            if day > head_day - 7:
                self._n_7d += 1
                self._sum_7d += amount

    def _late_hours(self, hour: int) -> tuple[int, float]:
        """Count and sum of the hours held from `hour` - 23 to `hour`."""
        hours, n, total = self._hours, 0, 0.0
        for at in range(0, len(hours), 3):
            if hour - HOURS_PER_DAY < hours[at] <= hour:
                n += int(hours[at + 1])
                total += hours[at + 2]
        return n, total

    def _late_days(self, first: int, last: int, head_day: int) -> tuple:
        """Count, sum and sum of squares of the days held from `first` to `last`."""
        first = max(first, head_day - (HISTORY_DAYS - 1))
        n, total, squares = 0, 0.0, 0.0
        for day in range(first, last + 1):
            at = day % HISTORY_DAYS
            n += self._day_n[at]
            total += self._day_sums[at]
            squares += self._day_sums[at + _SQUARES]
        return n, total, squares

    def _distinct_terminals_then_add(self, key: int, t: int) -> int:
        """Distinct terminals last seen after t - 1 day, this one included (at most 16); then `key`
        is seen at `t`."""
        terminals, seen = self._terminals, self._terminal_seen
        recent = bisect_left(seen, DAY_MS - t)  # the terminals last seen after t - 1 day
        packed = _HASH.pack(key)
        at = terminals.find(packed)
        while at > 0 and at & 3:  # a match across two hashes: look further
            at = terminals.find(packed, at + 1)
        if at > 0:
            at >>= 2
        distinct = min(DISTINCT_TERMINALS_CAP, recent + (not 0 <= at < recent))
        if at == 0:
            if t > -seen[0]:
                seen[0] = -t
        elif at < 0 or t > -seen[at]:
            if at > 0:
                del terminals[4 * at: 4 * at + 4], seen[at]
            position = 0 if not seen or t >= -seen[0] else bisect_left(seen, -t)
            terminals[4 * position: 4 * position] = packed
            seen.insert(position, -t)
            if len(seen) > DISTINCT_TERMINALS_CAP:  # the least recently seen goes
                del terminals[-4:], seen[-1]
        while seen and seen[-1] >= 2 * DAY_MS + seen[0]:  # seen 2 days or more before the latest
            del terminals[-4:], seen[-1]
        return distinct

    def to_bytes(self) -> bytes:
        """The state in at most CARD_STATE_MAX_BYTES bytes, little-endian: a version byte and the
        header, then the arrays as they are held: the hours held (hour, count, sum), the days' counts,
        sums and sums of squares, the days' highest ratios, the terminals held and when each was last seen."""
        header = _CARD_HEADER.pack(_CARD_VERSION, self._last, self._reference, len(self._hours) // 3,
                                   len(self._terminal_seen), *_card_totals(self))
        if _BIG_ENDIAN:
            return b"".join([header, _little_endian(self._hours), _little_endian(self._day_n),
                             _little_endian(self._day_sums), _little_endian(self._day_max), bytes(self._terminals),
                             _little_endian(self._terminal_seen)])
        return b"".join([header, self._hours, self._day_n, self._day_sums, self._day_max, self._terminals,
                         self._terminal_seen])  # arrays join as their bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> "CardState":
        """The state `to_bytes` wrote; ValueError when `data` is not one."""
        if len(data) < _CARD_HEADER.size or data[0] not in (2, _CARD_VERSION):
            raise ValueError(f"not a card state (version 2 or {_CARD_VERSION}): {len(data)} bytes starting "
                             f"{bytes(data[:4])!r}")
        version, last, reference, held_hours, held_terminals, *totals = _CARD_HEADER.unpack_from(data)
        max_bytes = _CARD_MAX_RATIO_BYTES if version == _CARD_VERSION else 0
        expected = _CARD_HEADER.size + held_hours * 24 + _CARD_DAYS_BYTES + max_bytes + held_terminals * 12
        if held_hours > HOURS_PER_DAY or held_terminals > DISTINCT_TERMINALS_CAP or len(data) != expected:
            raise ValueError(f"not a card state: {held_hours} hours, {held_terminals} terminals held in "
                             f"{len(data)} bytes")
        state = cls.__new__(cls)
        state._last, state._reference = last, reference
        for name, value in zip(_CARD_TOTALS, totals):
            setattr(state, name, value)
        at = _CARD_HEADER.size
        state._hours = _from_little_endian("d", data[at: at + held_hours * 24])
        at += held_hours * 24
        state._day_n = _from_little_endian("I", data[at: at + 4 * HISTORY_DAYS])
        at += 4 * HISTORY_DAYS
        state._day_sums = _from_little_endian("d", data[at: at + 8 * 2 * HISTORY_DAYS])
        at += 8 * 2 * HISTORY_DAYS
        state._day_max = (_from_little_endian("d", data[at: at + max_bytes]) if max_bytes
                          else array("d", bytes(8 * HISTORY_DAYS)))
        at += max_bytes
        state._terminals = bytearray(data[at: at + 4 * held_terminals])
        at += 4 * held_terminals
        state._terminal_seen = _from_little_endian("q", data[at: at + 8 * held_terminals])
        return state


_NO_BUCKET = -1
_TERMINAL_VERSION = 3  # 3 added the ordinary frauds; a version 2 record reads with none
_TERMINAL_HEADER = struct.Struct("<Bq")  # version, latest bucket
_TERMINAL_RINGS = {2: 2, 3: 3}  # version -> rings of uint32 it holds
TERMINAL_COUNTS_BYTES = _TERMINAL_HEADER.size + _TERMINAL_RINGS[_TERMINAL_VERSION] * 4 * TERMINAL_RING_BUCKETS
_WINDOWS_BUCKETS = tuple(days * TERMINAL_BUCKETS_PER_DAY for days in WINDOWS_DAYS)


class TerminalCounts:
    """A terminal's transactions, frauds and ordinary frauds (`is_ordinary_fraud`) per 6-hour UTC bucket
    (t // 6 h) over the 45 days up to the latest bucket seen, and its terminal features
    (TERMINAL_FEATURE_NAMES order).

    The terminal agent adds to it; scorers read snapshots of it (`from_bytes`). The features of one
    bucket are computed once and kept until the next `add`, so the many transactions of a terminal in
    six hours cost one lookup.
    """

    __slots__ = ("_head", "_transactions", "_frauds", "_ordinary", "_cached_bucket", "_cached")

    def __init__(self) -> None:
        self._head = _NO_BUCKET
        # Built by repetition, the rings take no spare capacity (bytes would give them some).
        self._transactions = array("I", (0,)) * TERMINAL_RING_BUCKETS
        self._frauds = array("I", (0,)) * TERMINAL_RING_BUCKETS
        self._ordinary = array("I", (0,)) * TERMINAL_RING_BUCKETS
        self._cached_bucket: int | None = None
        self._cached: tuple[float, ...] = ()

    @property
    def last_day(self) -> int | None:
        """The UTC day (epoch ms // 1 day) of the latest bucket counted, or None for a terminal with none."""
        return None if self._head == _NO_BUCKET else self._head // TERMINAL_BUCKETS_PER_DAY

    def add(self, timestamp_ms: int, fraud: bool = False, ordinary: bool = False) -> None:
        """Count a transaction at `timestamp_ms`, or with `fraud` the fraud label of one (with `ordinary`,
        an ordinary fraud as well). A bucket older than the 180 held counts nowhere."""
        bucket = timestamp_ms // TERMINAL_BUCKET_MS
        head = self._head
        if bucket > head:
            for ring in (self._transactions, self._frauds, self._ordinary):
                _clear(ring, head + 1, bucket)
            self._head = bucket
        elif bucket <= head - TERMINAL_RING_BUCKETS:
            return
        at = bucket % TERMINAL_RING_BUCKETS
        if not fraud:
            self._transactions[at] += 1
        else:
            self._frauds[at] += 1
            if ordinary:
                self._ordinary[at] += 1
        self._cached_bucket = None

    def features(self, timestamp_ms: int) -> tuple[float, ...]:
        """Count and fraud share of the terminal's transactions in the 4*w buckets q-29-4w+1 .. q-29 (q the
        bucket of `timestamp_ms`), for w in WINDOWS_DAYS: each of them more than 7 days before
        `timestamp_ms`; then the ordinary frauds in the same windows, for w in ORDINARY_FRAUD_WINDOWS_DAYS.
        A share is 0 without transactions and at most 1."""
        bucket = timestamp_ms // TERMINAL_BUCKET_MS
        if bucket == self._cached_bucket:
            return self._cached
        end = bucket - TERMINAL_DELAY_BUCKETS
        # The buckets read, held and counted: from the longest window's first to its last (or the head).
        first = max(end - _WINDOWS_BUCKETS[-1] + 1, self._head - (TERMINAL_RING_BUCKETS - 1))
        last = min(end, self._head)
        values: list[float] = []
        if first > last:
            values = [0.0] * len(TERMINAL_FEATURE_NAMES)
        else:
            transactions = _buckets(self._transactions, first, last)
            frauds = _buckets(self._frauds, first, last)
            ordinary = _buckets(self._ordinary, first, last)
            count = fraud_count = ordinary_count = 0
            ordinary_values: list[float] = []
            stop = len(transactions)
            for days, buckets in zip(WINDOWS_DAYS, _WINDOWS_BUCKETS):  # shortest first: each adds the buckets before
                start = max(0, end - buckets + 1 - first)
                count += sum(transactions[start:stop])
                fraud_count += sum(frauds[start:stop])
                ordinary_count += sum(ordinary[start:stop])
                stop = min(stop, start)
                values += (float(count), min(1.0, fraud_count / count) if count else 0.0)
                if days in ORDINARY_FRAUD_WINDOWS_DAYS:
                    ordinary_values.append(float(ordinary_count))
            values += ordinary_values
        self._cached_bucket, self._cached = bucket, tuple(values)
        return self._cached

    def to_bytes(self) -> bytes:
        """The counts in TERMINAL_COUNTS_BYTES bytes, little-endian: version, latest bucket (int64), then
        the transactions, the frauds and the ordinary frauds per bucket as uint32, in ring order (bucket
        modulo 180)."""
        return (_TERMINAL_HEADER.pack(_TERMINAL_VERSION, self._head) + _little_endian(self._transactions)
                + _little_endian(self._frauds) + _little_endian(self._ordinary))

    @classmethod
    def from_bytes(cls, data: bytes) -> "TerminalCounts":
        """The counts `to_bytes` wrote (or a version 2 record, without ordinary frauds); ValueError when
        `data` is not one."""
        size = 4 * TERMINAL_RING_BUCKETS
        rings = _TERMINAL_RINGS.get(data[0]) if data else None
        if rings is None or len(data) != _TERMINAL_HEADER.size + rings * size:
            raise ValueError(f"not terminal counts (version {_TERMINAL_VERSION}, {TERMINAL_COUNTS_BYTES} "
                             f"bytes): {len(data)} bytes starting {bytes(data[:4])!r}")
        counts = cls()
        counts._head = _TERMINAL_HEADER.unpack_from(data)[1]
        at = _TERMINAL_HEADER.size
        for i, ring in enumerate((counts._transactions, counts._frauds, counts._ordinary)[:rings]):
            ring[:] = _from_little_endian("I", data[at + i * size: at + (i + 1) * size])
        return counts


_TERMINAL_KEY_STRIDE = 1 << 32  # terminal code * stride + bucket: one sorted key space, terminals apart


def is_ordinary_fraud(amount_to_avg_30d: float | None) -> bool:
    """Whether a fraud's transaction was ordinary for its card (ORDINARY_FRAUD_RATIO); a fraud whose
    ratio is unknown is not."""
    return amount_to_avg_30d is not None and amount_to_avg_30d <= ORDINARY_FRAUD_RATIO


def terminal_matrix(terminal_ids: Sequence, timestamps: Sequence[int], labels: Sequence[int],
                    ordinary: Sequence[bool] | None = None) -> np.ndarray:
    """TERMINAL_FEATURE_NAMES of each row of a labelled history (rows in the order given): what
    `TerminalCounts.features` gives for it once the terminal's transactions and fraud labels (`labels`,
    1 for fraud; `ordinary`, true for a fraud that is an ordinary one, none when not given) up to it
    have been added in event-time order. Integer counts per (terminal, bucket) and their cumulative sums
    give every window at once, the same numbers bit for bit."""
    n = len(timestamps)
    out = np.zeros((n, len(TERMINAL_FEATURE_NAMES)), dtype=np.float64)
    if not n:
        return out
    codes: dict = {}
    code = np.fromiter((codes.setdefault(t, len(codes)) for t in terminal_ids), dtype=np.int64, count=n)
    keys = code * _TERMINAL_KEY_STRIDE + np.asarray(timestamps, dtype=np.int64) // TERMINAL_BUCKET_MS
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    fraud = np.asarray(labels).astype(bool)
    ordinary_fraud = fraud & (np.zeros(n, dtype=bool) if ordinary is None else np.asarray(ordinary, dtype=bool))
    cumulative_ordinary = np.concatenate(([0], np.cumsum(np.bincount(inverse[ordinary_fraud],
                                                                     minlength=len(unique_keys)))))
    cumulative_transactions = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=len(unique_keys)))))
    cumulative_frauds = np.concatenate(([0], np.cumsum(np.bincount(inverse[fraud], minlength=len(unique_keys)))))
    last = keys - TERMINAL_DELAY_BUCKETS
    up_to_last = np.searchsorted(unique_keys, last, side="right")
    for column, buckets in enumerate(_WINDOWS_BUCKETS):
        before_first = np.searchsorted(unique_keys, last - buckets, side="right")
        count = cumulative_transactions[up_to_last] - cumulative_transactions[before_first]
        frauds = cumulative_frauds[up_to_last] - cumulative_frauds[before_first]
        out[:, 2 * column] = count
        out[:, 2 * column + 1] = np.where(count > 0, np.minimum(1.0, frauds / np.maximum(count, 1)), 0.0)
        if WINDOWS_DAYS[column] in ORDINARY_FRAUD_WINDOWS_DAYS:
            at = 2 * len(WINDOWS_DAYS) + ORDINARY_FRAUD_WINDOWS_DAYS.index(WINDOWS_DAYS[column])
            out[:, at] = cumulative_ordinary[up_to_last] - cumulative_ordinary[before_first]
    return out


def model_feature_names(attributes: Sequence[str] = ()) -> tuple[str, ...]:
    """A model's feature names: ours, then the upstream attributes it reads."""
    return FEATURE_NAMES + tuple(ATTRIBUTE_PREFIX + key for key in attributes)


def model_inputs(feature_names: Sequence[str]) -> tuple[tuple[int, ...] | None, tuple[str, ...]]:
    """What a model with these feature names reads: the columns of FEATURE_NAMES it takes, in its
    order (None when it takes them all, as they are), then the upstream attribute keys. A version
    trained before a feature was added reads fewer of ours and is still served. ValueError for a name
    that is neither ours nor an attribute, a name twice, or one of ours after an attribute."""
    names = tuple(feature_names)
    ours = tuple(n for n in names if not n.startswith(ATTRIBUTE_PREFIX))
    attributes = names[len(ours):]
    unknown = [n for n in ours if n not in FEATURE_NAMES]
    if unknown or len(set(ours)) != len(ours) or not all(n.startswith(ATTRIBUTE_PREFIX) for n in attributes):
        raise ValueError(f"features {list(names)} are not some of {list(FEATURE_NAMES)} followed by "
                         f"{ATTRIBUTE_PREFIX}* attributes" + (f" (unknown: {unknown})" if unknown else ""))
    columns = None if ours == FEATURE_NAMES else tuple(FEATURE_NAMES.index(n) for n in ours)
    return columns, tuple(n[len(ATTRIBUTE_PREFIX):] for n in attributes)


def attribute_matrix(transactions: Sequence[Mapping], keys: Sequence[str]) -> np.ndarray:
    """One column per attribute key; NaN where a transaction does not carry it."""
    out = np.full((len(transactions), len(keys)), np.nan, dtype=np.float64)
    for i, txn in enumerate(transactions):
        attributes = txn.get("attributes") or {}
        for j, key in enumerate(keys):
            value = attributes.get(key)
            if value is not None:
                out[i, j] = value
    return out


_PROGRESS_EVERY = 10_000  # card rows between two progress reports


def feature_matrix(transactions: Sequence[Mapping], labels: Sequence[int], attributes: Sequence[str] = (),
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Features of a labelled history of transactions, in `model_feature_names(attributes)` order.

    Give the transactions in event-time order (the order the stream would see them): each card's are
    replayed through a `CardState` as the stream does. `labels` (1 for fraud) feed the terminal risks
    (and, with each row's own `amount_to_avg_30d`, the ordinary frauds),
    which only read transactions more than 7 days old (`terminal_matrix`). `progress`, when given, hears
    how many card rows are done: a callable(done, total), or a tqdm-like bar (its `update(n)`).
    """
    n = len(transactions)
    # One flat array of doubles: no list per row outlives its row, so the garbage collector has
    # nothing to walk through however long the history.
    cards = array("d")
    states: dict = {}
    for start in range(0, n, _PROGRESS_EVERY):
        for txn in transactions[start: start + _PROGRESS_EVERY]:
            state = states.get(txn["customer_id"])
            if state is None:
                state = states[txn["customer_id"]] = CardState()
            cards.extend(state.features_then_add(txn))
        if progress is not None:
            done = min(n, start + _PROGRESS_EVERY)
            progress.update(done - start) if hasattr(progress, "update") else progress(done, n)
    card_matrix = np.frombuffer(cards, dtype=np.float64).reshape(n, N_CUSTOMER_FEATURES)
    ordinary = card_matrix[:, CUSTOMER_FEATURE_NAMES.index("amount_to_avg_30d")] <= ORDINARY_FRAUD_RATIO
    terminals = terminal_matrix([t["terminal_id"] for t in transactions],
                                [t["timestamp"] for t in transactions], labels, ordinary)
    return np.hstack([card_matrix, terminals,
                      attribute_matrix(transactions, attributes)])


FUTURE_TOLERANCE_MS = DAY_MS


def invalid_transaction_reason(txn: Mapping, now_ms: int | None = None) -> str | None:
    """Why a decoded transaction cannot be scored, or None when it can. With `now_ms`, an event time
    more than a day ahead of it (a timestamp in microseconds, say) is refused: it would push the
    card's whole history out of its windows."""
    amount = txn.get("amount")
    if amount is None or not math.isfinite(amount):
        return f"field amount: not a finite number ({amount!r})"
    if amount < 0:
        return f"field amount: negative ({amount!r})"
    for field in ("transaction_id", "customer_id", "terminal_id"):
        if not txn.get(field):
            return f"field {field}: empty"
    if txn.get("timestamp", 0) <= 0:
        return f"field timestamp: not a positive epoch-millisecond time ({txn.get('timestamp')!r})"
    if now_ms is not None and txn["timestamp"] > now_ms + FUTURE_TOLERANCE_MS:
        return f"field timestamp: more than a day in the future ({txn['timestamp']!r} epoch ms)"
    return None
