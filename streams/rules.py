"""Hard rules evaluated beside the model: block lists and amount ceilings per merchant category.

Rules live on a compacted control topic, one record per rule keyed by its id, a tombstone (null
value) removing it. Every worker reads the whole topic before its first batch and keeps following it
(streams/tables.py), so a change reaches all workers within a batch or two, without a restart. A fired rule forces DECLINE and is named in
the verdict's `rules`.

Control record values (JSON):
    {"type": "block_card", "value": "<customer_id>"}
    {"type": "block_terminal", "value": "<terminal_id>"}
    {"type": "amount_ceiling", "merchant_category": "<mcc>", "max_amount": 500.0}
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from streams.tables import Source, TableReader

log = logging.getLogger(__name__)


class InvalidRule(ValueError):
    """A control record that does not describe a rule; it is ignored, and said so."""


@dataclass(frozen=True)
class Rules:
    blocked_cards: frozenset = frozenset()
    blocked_terminals: frozenset = frozenset()
    amount_ceilings: Mapping[str, float] = field(default_factory=dict)
    count: int = 0

    def fired(self, txn: Mapping) -> list[str]:
        """Names of the rules this transaction breaks, in a fixed order."""
        out = []
        if txn["customer_id"] in self.blocked_cards:
            out.append(f"block_card:{txn['customer_id']}")
        if txn["terminal_id"] in self.blocked_terminals:
            out.append(f"block_terminal:{txn['terminal_id']}")
        ceiling = self.amount_ceilings.get(txn.get("merchant_category", ""))
        if ceiling is not None and txn["amount"] > ceiling:
            out.append(f"amount_ceiling:{txn.get('merchant_category')}>{ceiling:g}")
        return out


def parse_rule(value: bytes | str) -> dict:
    """A control record's value as a validated rule; InvalidRule names what is wrong."""
    try:
        rule = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRule(f"not JSON: {exc}") from exc
    if not isinstance(rule, dict):
        raise InvalidRule("not a JSON object")
    kind = rule.get("type")
    if kind in ("block_card", "block_terminal"):
        if not isinstance(rule.get("value"), str) or not rule["value"]:
            raise InvalidRule(f"field value: {kind} needs a non-empty string")
        return {"type": kind, "value": rule["value"]}
    if kind == "amount_ceiling":
        mcc, ceiling = rule.get("merchant_category"), rule.get("max_amount")
        if not isinstance(mcc, str) or not mcc:
            raise InvalidRule("field merchant_category: a non-empty string")
        if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float)) or not ceiling >= 0:
            raise InvalidRule("field max_amount: a non-negative number")
        return {"type": kind, "merchant_category": mcc, "max_amount": float(ceiling)}
    raise InvalidRule(f"field type: one of block_card, block_terminal, amount_ceiling (got {kind!r})")


def compile_rules(records: Mapping[str, dict]) -> Rules:
    """The rules in force, from the latest valid record of each rule id."""
    cards, terminals, ceilings = set(), set(), {}
    for rule in records.values():
        if rule["type"] == "block_card":
            cards.add(rule["value"])
        elif rule["type"] == "block_terminal":
            terminals.add(rule["value"])
        else:  # the lowest ceiling wins when several name one category
            mcc = rule["merchant_category"]
            ceilings[mcc] = min(rule["max_amount"], ceilings.get(mcc, float("inf")))
    return Rules(frozenset(cards), frozenset(terminals), ceilings, len(records))


def apply_rules(rules: Rules, txns: Sequence[Mapping], decisions: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    """Decisions with every transaction that breaks a rule declined, and the rules each one broke."""
    fired = [rules.fired(t) for t in txns] if rules.count else [[] for _ in txns]
    if any(fired):
        decisions = decisions.copy()
        for i, names in enumerate(fired):
            if names:
                decisions[i] = "DECLINE"
    return decisions, fired


class RulesTable:
    """The rules in force, from the control topic."""

    def __init__(self, topic: str):
        self.topic = topic
        self.rules = Rules()
        self.records: dict[str, dict] = {}
        self.invalid = 0
        self.source = Source(topic, 0, self.on_record, follow=True)  # one partition, compacted

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        rule_id = (key or b"").decode(errors="replace")
        if not rule_id:
            self.invalid += 1
            log.warning("rule without a key ignored")
            return
        if value is None:
            self.records.pop(rule_id, None)
        else:
            try:
                self.records[rule_id] = parse_rule(value)
            except InvalidRule as exc:
                self.invalid += 1
                log.warning("rule %s ignored: %s", rule_id, exc)
                return
        self.rules = compile_rules(self.records)

    def on_record(self, msg) -> None:
        self.apply(msg.key(), msg.value())


def read_rules(bootstrap: str, topic: str, timeout: float = 15.0) -> RulesTable:
    """The rules in force now, read once to the end of the control topic."""
    import threading

    table = RulesTable(topic)
    reader = TableReader({"bootstrap.servers": bootstrap})
    try:
        reader.add(table.source)
        reader.catch_up([table.source], threading.Event(), timeout)
    finally:
        reader.close()
    return table
