"""The scorer's topics and their schemas, created and registered idempotently."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from core.settings import Settings
from schemas.codec import AvroCodec, SchemaRegistry, load_schema

DAY_MS = 86_400_000
WEEK_MS = str(7 * DAY_MS)
# A worker reads the verdicts of the feedback horizon (30 days) of the feedback partitions it holds.
VERDICT_RETENTION_MS = str(45 * DAY_MS)
# Compacted topics that hold the latest value of each key: the stores' changelogs and the terminal
# snapshots every worker follows. Short segments let the cleaner keep them near one record per key.
COMPACTED = {"cleanup.policy": "compact", "segment.ms": str(3_600_000), "min.cleanable.dirty.ratio": "0.2"}

# A record header saying a caller waits for the record's outputs (the predict API's transactions):
# the worker commits the transaction holding it without waiting out the commit interval.
AWAITED = "fraud.awaited"


def partition_of(key: str, partitions: int) -> int:
    """The partition the Java client's (and aiokafka's, and our producers' murmur2) default
    partitioner gives a record keyed by `key`."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@lru_cache(maxsize=65_536)
def terminal_partition(terminal_id: str, partitions: int) -> int:
    """The partition of a terminal in the terminal topics and table: a record keyed by the terminal
    id lands there too."""
    return partition_of(terminal_id, partitions)


def cards_changelog(settings: Settings) -> str:
    """Each card's state (streams/scoring.py), by card, partitioned like the transactions."""
    return f"{settings.app_id}-cards-changelog"


def terminals_changelog(settings: Settings) -> str:
    """Each terminal's daily counts (streams/terminals.py), partitioned like the terminal events."""
    return f"{settings.app_id}-terminals-changelog"


def terminal_snapshots(settings: Settings) -> str:
    """Each terminal's counts as the terminal features read them, published when a day closes or a
    late label changes a closed day: what every worker follows."""
    return f"{settings.app_id}-terminal-snapshots"


def topic_specs(settings: Settings) -> dict[str, dict]:
    """Topic name -> config. The DLQ keeps messages for 30 days: long enough to investigate."""
    return {
        settings.transactions_topic: {"retention.ms": WEEK_MS},
        settings.verdicts_topic: {"retention.ms": VERDICT_RETENTION_MS},
        settings.feedback_topic: {"retention.ms": str(90 * DAY_MS)},
        settings.dlq_topic: {"retention.ms": str(30 * DAY_MS)},
        # Scored transactions and fraud labels, by terminal partition, on their way to the counts.
        settings.terminal_events_topic: {"retention.ms": WEEK_MS},
        # One example per transaction, its latest label winning: what training reads.
        settings.examples_topic: {"cleanup.policy": "compact"},
        cards_changelog(settings): COMPACTED,
        terminals_changelog(settings): COMPACTED,
        terminal_snapshots(settings): COMPACTED,
    }


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; return the names created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [NewTopic(name, settings.partitions, 1, config=config)
              for name, config in topic_specs(settings).items() if name not in existing]
    if settings.rules_topic not in existing:  # every worker reads all of it: one partition, compacted
        wanted.append(NewTopic(settings.rules_topic, 1, 1, config={"cleanup.policy": "compact"}))
    created = []
    for name, future in (admin.create_topics(wanted, request_timeout=timeout).items() if wanted else []):
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created


def register_schemas(settings: Settings) -> dict[str, int]:
    """Register our schemas under `<topic>-value` with BACKWARD compatibility."""
    registry = SchemaRegistry(settings.schema_registry_url)
    return {codec.subject: codec.register() for codec in codecs(settings, registry).values()}


SCHEMAS = {"transactions": "transaction", "verdicts": "verdict", "feedback": "feedback",
           "terminal_events": "terminal_events", "examples": "labelled_example"}


def codecs(settings: Settings, registry: SchemaRegistry) -> dict[str, AvroCodec]:
    """One codec per Avro topic, by role (`transactions`, `verdicts`, ...), subject `<topic>-value`."""
    out = {}
    for role, schema in SCHEMAS.items():
        topic = getattr(settings, f"{role}_topic")
        out[role] = AvroCodec(registry, load_schema(schema), f"{topic}-value")
    return out
