"""What the request bodies' fields are made of, as JSON Schema reads a JSON value: the bodies are
validated strictly (no "3" for 3, no true for 1), and an integer is any number without a fraction."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field


def _json_integer(value):
    """3 or 3.0, as JSON Schema's "integer" takes them; never true, "3" or 3.5."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("should be an integer")
    return value


Integer = Annotated[int, BeforeValidator(_json_integer)]


def integer(**bounds):
    """An Integer within `bounds` (ge, gt, le), to use in a union (`integer(ge=0) | None`): there the
    bounds must come before the validator for the document to state them."""
    return Annotated[int, Field(**bounds), BeforeValidator(_json_integer)]


def absent_or(**field):
    """A field that may be left out but is never null: `Field(None, ...)` whose document gives no
    default (null is not among its values). `json_schema_extra`, when given, is added to its schema."""
    extra = field.pop("json_schema_extra", {})

    def schema(s: dict) -> None:
        s.pop("default", None)
        s.update(extra)

    return Field(None, json_schema_extra=schema, **field)
