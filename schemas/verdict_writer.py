"""The Verdict record (schemas/verdict.avsc) written straight to Avro binary, in Confluent framing.

A worker writes one verdict per transaction, and a generic writer walks the schema for every field of
every record: about 40 us a verdict here, most of the worker's time per transaction. This writer
knows the Verdict's fields in order and the model's feature names in advance (the `features` map's keys
are the same for every verdict of one model), so a verdict costs a handful of struct calls. Its output
is byte for byte what fastavro writes for the same record (tests/unit/test_verdict_writer.py); a change
to verdict.avsc must change both.
"""

from __future__ import annotations

import struct
from typing import Mapping, Sequence

_DOUBLE = struct.Struct("<d")
_TWO_DOUBLES = struct.Struct("<dd")
_DECISIONS = {"APPROVE": b"\x00", "REVIEW": b"\x02", "DECLINE": b"\x04"}  # enum index, zigzag varint
_NULL, _SECOND_BRANCH, _END = b"\x00", b"\x02", b"\x00"


def _long(n: int) -> bytes:
    """Avro's long: zigzag, then a little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(_long(n) for n in range(128))


def _string(text: str) -> bytes:
    data = text.encode()
    return (_SMALL[len(data)] if len(data) < 128 else _long(len(data))) + data


class VerdictWriter:
    """Writes Verdicts whose `features` map has the keys `feature_names`, in that order."""

    def __init__(self, schema_id: int, feature_names: Sequence[str]):
        self.header = struct.pack(">bI", 0, schema_id)
        self.names = tuple(feature_names)
        self.name_bytes = {name: _string(name) for name in self.names}
        keys = [self.name_bytes[name] for name in self.names]
        self.features = struct.Struct("<" + "".join(f"{len(k)}sd" for k in keys))
        self.slots: list = [x for k in keys for x in (k, 0.0)]
        self.map_start = _long(len(keys)) if keys else b""
        # The fields every verdict of a batch shares (one model, one scoring time), written once.
        self._model: tuple = (None, None, b"")
        self._scored_at: tuple = (None, b"")

    def write(self, v: Mapping) -> bytes:
        """One verdict's message value: magic byte, schema id, Avro body."""
        name, version = v["model_name"], v["model_version"]
        if self._model[0] != name or self._model[1] != version:
            self._model = (name, version, _string(name) + _string(version))
        if self._scored_at[0] != v["scored_at"]:
            self._scored_at = (v["scored_at"], _long(v["scored_at"]))
        parts = [self.header, _string(v["transaction_id"]), _string(v["customer_id"]),
                 _DOUBLE.pack(v["score"]), _DECISIONS[v["decision"]], self._model[2]]
        reasons = v["reasons"]
        if reasons:
            parts.append(_SMALL[len(reasons)] if len(reasons) < 64 else _long(len(reasons)))
            for reason in reasons:
                name = reason["feature"]
                parts.append(self.name_bytes.get(name) or _string(name))
                parts.append(_TWO_DOUBLES.pack(reason["value"], reason["contribution"]))
        parts.append(_END)
        rules = v["rules"]
        if rules:
            parts.append(_long(len(rules)))
            parts.extend(_string(rule) for rule in rules)
        parts.append(_END)
        challenger = v["challenger_model_version"]
        parts.append(_NULL if challenger is None else _SECOND_BRANCH + _string(challenger))
        shadow = v["challenger_score"]
        parts.append(_NULL if shadow is None else _SECOND_BRANCH + _DOUBLE.pack(shadow))
        parts.append(_long(v["transaction_timestamp"]))
        parts.append(self._scored_at[1])
        parts.append(_DOUBLE.pack(v["latency_ms"]))
        terminal = v["terminal_id"]
        parts.append(_NULL if terminal is None else _SECOND_BRANCH + _string(terminal))
        parts.append(self._features(v["features"]))
        return b"".join(parts)

    def _features(self, features: Mapping[str, float]) -> bytes:
        if not features:
            return _END
        if tuple(features) == self.names:
            slots = self.slots
            slots[1::2] = features.values()
            return self.map_start + self.features.pack(*slots) + _END
        # Other keys than the model's: written one by one.
        parts = [_long(len(features))]
        for name, value in features.items():
            parts.append(_string(name))
            parts.append(_DOUBLE.pack(value))
        parts.append(_END)
        return b"".join(parts)
