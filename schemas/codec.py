"""Avro wire contracts in Confluent framing: magic byte 0, 4-byte big-endian schema id, Avro body.

Schemas are parsed once. Decoding resolves the writer's schema (looked up by id in the registry and
cached) against our reader schema, so records written with an older compatible version still decode.
Timestamps stay plain epoch-millisecond longs on both sides: no datetime objects on the hot path.
"""

from __future__ import annotations

import copy
import io
import json
import struct
import time
from importlib import resources
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

MAGIC = 0
_HEADER = struct.Struct(">bI")
_UNKNOWN_ID_RETRY_SECONDS = 60.0


class CodecError(Exception):
    """A message that cannot be decoded or encoded; str(exc) is the reason given to the DLQ."""


class RegistryUnavailable(Exception):
    """The schema registry could not be reached: not the message's fault, so never a DLQ reason."""


def load_schema(name: str) -> dict:
    """The schema shipped in this package as `<name>.avsc` (transaction, verdict, feedback)."""
    return json.loads(resources.files("schemas").joinpath(f"{name}.avsc").read_text())


def _without_logical_types(schema: Any) -> Any:
    """A copy of the schema in which timestamp-millis and friends read and write as plain longs."""
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    return schema


def _parse(schema: dict) -> dict:
    return fastavro.parse_schema(_without_logical_types(copy.deepcopy(schema)), _force=True)


class SchemaRegistry:
    """The registry seen through its Confluent-compatible API: register subjects, resolve ids."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.client = SchemaRegistryClient({"url": url, "timeout": timeout})
        self._writers: dict[int, dict] = {}
        self._unknown: dict[int, float] = {}

    def register(self, subject: str, schema: dict, compatibility: str = "BACKWARD") -> int:
        """Register `schema` under `subject` with the given compatibility rule; return its id."""
        try:
            self.client.set_compatibility(subject, compatibility)
            schema_id = self.client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
        except SchemaRegistryError as exc:
            raise CodecError(f"registry refused schema for {subject}: {exc}") from exc
        except Exception as exc:  # connection refused, timeout
            raise RegistryUnavailable(f"schema registry at {self.url}: {exc}") from exc
        self._writers[schema_id] = _parse(schema)
        return schema_id

    def writer_schema(self, schema_id: int) -> dict:
        """The parsed schema a message was written with; CodecError when the registry has no such id."""
        parsed = self._writers.get(schema_id)
        if parsed is not None:
            return parsed
        refused_at = self._unknown.get(schema_id)
        if refused_at is not None and time.monotonic() - refused_at < _UNKNOWN_ID_RETRY_SECONDS:
            raise CodecError(f"unknown schema id {schema_id}")
        try:
            registered = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                self._unknown[schema_id] = time.monotonic()
                raise CodecError(f"unknown schema id {schema_id}") from exc
            raise RegistryUnavailable(f"schema registry at {self.url}: {exc}") from exc
        except Exception as exc:
            raise RegistryUnavailable(f"schema registry at {self.url}: {exc}") from exc
        if registered.schema_type not in (None, "AVRO"):
            raise CodecError(f"schema id {schema_id} is {registered.schema_type}, not AVRO")
        try:
            parsed = _parse(json.loads(registered.schema_str))
        except Exception as exc:  # references, unknown types: fastavro cannot read with it
            raise CodecError(f"schema id {schema_id} cannot be used: {type(exc).__name__}: {exc}") from exc
        self._writers[schema_id] = parsed
        return parsed

    def knows(self, schema_id: int) -> bool:
        """True when decoding with this id needs no registry call."""
        return schema_id in self._writers

    def reachable(self) -> bool:
        try:
            self.client.get_subjects()
            return True
        except Exception:
            return False


class AvroCodec:
    """Encode and decode one record type for one subject (`<topic>-value`)."""

    def __init__(self, registry: SchemaRegistry, schema: dict, subject: str):
        self.registry = registry
        self.schema = schema
        self.subject = subject
        self.reader = _parse(schema)
        self.schema_id: int | None = None
        # Per writer schema id: the reader schema to resolve it to, or None when the writer's is the
        # reader's own (fastavro then reads it as it is). Without it fastavro compares the two schemas,
        # field by field, on every call to find out.
        self._resolve_to: dict[int, dict | None] = {}

    def register(self) -> int:
        self.schema_id = self.registry.register(self.subject, self.schema)
        return self.schema_id

    def encode(self, record: dict) -> bytes:
        if self.schema_id is None:
            raise CodecError(f"schema for {self.subject} is not registered")
        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC, self.schema_id))
        try:
            fastavro.schemaless_writer(out, self.reader, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"cannot encode {self.subject}: {exc}") from exc
        return out.getvalue()

    @staticmethod
    def schema_id_of(data: bytes | None) -> int | None:
        """The schema id in a message's Confluent header, or None when it has none."""
        if not data or len(data) < _HEADER.size or data[0] != MAGIC:
            return None
        return _HEADER.unpack_from(data)[1]

    def decode(self, data: bytes | None) -> dict:
        if not data:
            raise CodecError("empty message")
        if len(data) < _HEADER.size:
            raise CodecError(f"message of {len(data)} bytes is shorter than the Confluent header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CodecError(f"not Confluent Avro: magic byte {magic}, expected 0")
        writer = self.registry.writer_schema(schema_id)
        try:
            reader = self._resolve_to[schema_id]
        except KeyError:
            reader = self._resolve_to[schema_id] = None if writer == self.reader else self.reader
        body = io.BytesIO(data)
        body.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(body, writer, reader)
        except Exception as exc:  # fastavro raises many types on corrupt bodies
            raise CodecError(f"invalid Avro body for schema id {schema_id}: {type(exc).__name__}: {exc}") from exc
        if body.tell() != len(data):
            raise CodecError(f"{len(data) - body.tell()} trailing bytes after the Avro record")
        return record
