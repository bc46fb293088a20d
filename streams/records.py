"""A record a step cannot use: the schema registry away, or the record itself bad.

Every step (streams/scoring.py, feedback.py, terminals.py) reads its records through `decoded`:
- a record whose writer schema cannot be fetched because the registry is unreachable is not the
  record's fault: its partition is set back to it and read again later, and the records after it
  wait with it (order within a partition holds);
- a record that cannot be decoded goes to the dead-letter topic (`dead_letter`) with the reason, and
  counts as processed: the stream goes on.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Iterator

from core.metrics import Metrics
from schemas.codec import AvroCodec, CodecError, RegistryUnavailable
from streams.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def decoded(records: Iterable, codec: AvroCodec, checkpoint: Checkpoint, dlq_topic: str, metrics: Metrics,
            retry_later: Callable[[str, int, int], None]) -> Iterator[tuple[object, dict]]:
    """(record, value) for each record of one partition that decodes, in offset order."""
    for msg in records:
        try:
            value = codec.decode(msg.value())
        except RegistryUnavailable as exc:
            log.error("schema registry unavailable; %s[%d] waits at offset %d: %s",
                      msg.topic(), msg.partition(), msg.offset(), exc)
            retry_later(msg.topic(), msg.partition(), msg.offset())
            return
        except CodecError as exc:
            dead_letter(checkpoint, dlq_topic, msg, str(exc), metrics)
            checkpoint.processed(msg.topic(), msg.partition(), msg.offset())
            continue
        yield msg, value


def dead_letter(checkpoint: Checkpoint, topic: str, msg, reason: str, metrics: Metrics) -> None:
    """The record as it came, with why it could not be processed and where it came from."""
    headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.source.topic", msg.topic().encode()),
        ("dlq.source.partition", str(msg.partition()).encode()),
        ("dlq.source.offset", str(msg.offset()).encode()),
        ("dlq.failed_at", str(int(time.time() * 1000)).encode()),
    ]
    metrics.dead_letters.labels(msg.topic()).inc()
    log.warning("DLQ %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), reason)
    checkpoint.produce(topic, msg.value(), msg.key(), headers=headers)
