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
# Workers read the verdicts of the feedback horizon (30 days) at start; terminal labels are kept as
# long, for audit.
VERDICT_RETENTION_MS = str(45 * DAY_MS)
# The Faust table of terminal histories (streams/app.py), and the compacted changelog every worker
# follows to read all terminals: the latest history of each terminal, and the updates since.
TERMINAL_TABLE = "terminal-history"
TERMINAL_CHANGELOG_CONFIG = {"segment.ms": str(3_600_000), "min.cleanable.dirty.ratio": "0.2"}


@lru_cache(maxsize=65_536)
def terminal_partition(terminal_id: str, partitions: int) -> int:
    """The partition of a terminal in the terminal topics and table: the Java client's (and
    aiokafka's) default partitioner of the terminal id, so a record keyed by it lands there too."""
    return (murmur2(terminal_id.encode()) & 0x7FFFFFFF) % partitions


def terminal_changelog(settings: Settings) -> str:
    """The changelog topic Faust gives the terminal table."""
    return f"{settings.app_id}-{TERMINAL_TABLE}-changelog"


def topic_specs(settings: Settings) -> dict[str, dict]:
    """Topic name -> config. The DLQ keeps messages for 30 days: long enough to investigate."""
    return {
        settings.transactions_topic: {"retention.ms": WEEK_MS},
        settings.verdicts_topic: {"retention.ms": VERDICT_RETENTION_MS},
        settings.feedback_topic: {"retention.ms": str(90 * DAY_MS)},
        settings.dlq_topic: {"retention.ms": str(30 * DAY_MS)},
        settings.terminal_labels_topic: {"retention.ms": VERDICT_RETENTION_MS},
        # Scored transactions, by terminal partition, on their way to their terminals' table rows.
        settings.terminal_transactions_topic: {"retention.ms": WEEK_MS},
        # One example per transaction, its latest label winning: what training reads.
        settings.examples_topic: {"cleanup.policy": "compact"},
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
    pairs = {settings.transactions_topic: "transaction", settings.verdicts_topic: "verdict",
             settings.feedback_topic: "feedback", settings.terminal_labels_topic: "terminal_label",
             settings.terminal_transactions_topic: "terminal_transaction",
             settings.examples_topic: "labelled_example"}
    return {f"{topic}-value": AvroCodec(registry, load_schema(name), f"{topic}-value").register()
            for topic, name in pairs.items()}
