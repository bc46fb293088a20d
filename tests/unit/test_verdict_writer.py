"""The verdict writer's bytes are fastavro's, for every shape a verdict takes."""

from __future__ import annotations

import io
import random
import struct

import fastavro
import pytest

from schemas.codec import _parse, load_schema
from schemas.verdict_writer import VerdictWriter

NAMES = ("amount", "customer_nb_tx_1d", "terminal_risk_30d", "attribute_device_risk")
SCHEMA = _parse(load_schema("verdict"))


def fastavro_bytes(verdict: dict, schema_id: int) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, SCHEMA, verdict)
    return out.getvalue()


def verdict(rng: random.Random, **changes) -> dict:
    features = {name: rng.uniform(-1e6, 1e6) for name in NAMES}
    base = {
        "transaction_id": f"tx-{rng.randrange(10**12)}", "customer_id": "C" * rng.randrange(1, 200),
        "score": rng.random(), "decision": rng.choice(["APPROVE", "REVIEW", "DECLINE"]),
        "model_name": "fraud-xgb", "model_version": str(rng.randrange(1, 500)),
        "reasons": [{"feature": rng.choice(NAMES), "value": rng.uniform(-5, 5), "contribution": rng.uniform(-2, 2)}
                    for _ in range(3)],
        "rules": [], "challenger_model_version": None, "challenger_score": None,
        "transaction_timestamp": rng.randrange(-2**40, 2**42), "scored_at": rng.randrange(0, 2**42),
        "latency_ms": rng.uniform(0, 1e4), "terminal_id": f"T{rng.randrange(10**6)}", "features": features,
    }
    return {**base, **changes}


@pytest.mark.parametrize("changes", [
    {},
    {"challenger_model_version": "7", "challenger_score": 0.25},
    {"rules": ["block_card:C1", "amount_ceiling:5411>500"], "decision": "DECLINE"},
    {"terminal_id": None, "reasons": [], "features": {}},
    {"features": {"amount": 1.0, "something_else": 2.0}},  # keys other than the model's
    {"transaction_id": "é" * 70, "customer_id": "卡" * 50},  # multi-byte text, lengths past one varint byte
    {"transaction_timestamp": 0, "scored_at": 2**62, "latency_ms": 0.0},
    {"reasons": [{"feature": "not_a_feature_name", "value": 1.0, "contribution": 0.5}] * 70},
    {"model_version": "3", "scored_at": 1_700_000_000_000},  # a batch's: one model, one scoring time
])
def test_the_writer_writes_what_fastavro_writes(changes):
    rng = random.Random(7)
    writer = VerdictWriter(schema_id=42, feature_names=NAMES)
    for _ in range(50):
        record = verdict(rng, **changes)
        assert writer.write(record) == fastavro_bytes(record, 42)
