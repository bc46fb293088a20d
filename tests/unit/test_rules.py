"""Hard rules beside the model: parsing control records, compiling them, applying them to a batch."""

import json

import numpy as np
import pytest

from streams.rules import InvalidRule, Rules, RulesTable, apply_rules, compile_rules, parse_rule


def txn(card="C1", terminal="T1", mcc="5411", amount=10.0):
    return {"customer_id": card, "terminal_id": terminal, "merchant_category": mcc, "amount": amount}


RULES = compile_rules({
    "block_card:C9": {"type": "block_card", "value": "C9"},
    "block_terminal:T9": {"type": "block_terminal", "value": "T9"},
    "amount_ceiling:5411": {"type": "amount_ceiling", "merchant_category": "5411", "max_amount": 500.0},
})


@pytest.mark.parametrize("transaction, fired", [
    (txn(), []),
    (txn(card="C9"), ["block_card:C9"]),
    (txn(terminal="T9"), ["block_terminal:T9"]),
    (txn(amount=500.0), []),                       # the ceiling itself is allowed
    (txn(amount=500.01), ["amount_ceiling:5411>500"]),
    (txn(mcc="7995", amount=10_000.0), []),        # no ceiling for that category
    (txn(card="C9", terminal="T9", amount=900.0),
     ["block_card:C9", "block_terminal:T9", "amount_ceiling:5411>500"]),
])
def test_each_rule_fires_on_what_it_names(transaction, fired):
    assert RULES.fired(transaction) == fired


def test_a_fired_rule_declines_whatever_the_model_said_and_is_listed():
    decisions = np.array(["APPROVE", "REVIEW", "APPROVE"], dtype=object)
    out, fired = apply_rules(RULES, [txn(), txn(card="C9"), txn(terminal="T9")], decisions)
    assert out.tolist() == ["APPROVE", "DECLINE", "DECLINE"]
    assert fired == [[], ["block_card:C9"], ["block_terminal:T9"]]
    assert decisions.tolist() == ["APPROVE", "REVIEW", "APPROVE"], "the input is left as it was"


def test_no_rules_change_nothing():
    decisions = np.array(["REVIEW"], dtype=object)
    out, fired = apply_rules(Rules(), [txn(card="C9")], decisions)
    assert out.tolist() == ["REVIEW"] and fired == [[]]


def test_the_lowest_of_several_ceilings_for_one_category_wins():
    rules = compile_rules({"a": {"type": "amount_ceiling", "merchant_category": "m", "max_amount": 300.0},
                           "b": {"type": "amount_ceiling", "merchant_category": "m", "max_amount": 200.0}})
    assert rules.amount_ceilings == {"m": 200.0}


@pytest.mark.parametrize("value, message", [
    (b"not json", "not JSON"),
    (b"[1]", "not a JSON object"),
    (json.dumps({"type": "block_everything"}), "field type"),
    (json.dumps({"type": "block_card", "value": ""}), "field value"),
    (json.dumps({"type": "amount_ceiling", "merchant_category": "m", "max_amount": -1}), "field max_amount"),
    (json.dumps({"type": "amount_ceiling", "merchant_category": "m", "max_amount": True}), "field max_amount"),
    (json.dumps({"type": "amount_ceiling", "max_amount": 5}), "field merchant_category"),
])
def test_invalid_control_records_are_refused_with_the_field_named(value, message):
    with pytest.raises(InvalidRule, match=message):
        parse_rule(value)


def test_following_the_control_records_adds_replaces_and_removes_rules():
    follower = RulesTable("rules")
    follower.apply(b"block_card:C1", json.dumps({"type": "block_card", "value": "C1"}).encode())
    follower.apply(b"ceiling", json.dumps({"type": "amount_ceiling", "merchant_category": "m",
                                           "max_amount": 5}).encode())
    assert follower.rules.blocked_cards == {"C1"} and follower.rules.count == 2
    follower.apply(b"ceiling", json.dumps({"type": "amount_ceiling", "merchant_category": "m",
                                           "max_amount": 9}).encode())
    assert follower.rules.amount_ceilings == {"m": 9.0}
    follower.apply(b"block_card:C1", None)  # tombstone
    assert follower.rules.blocked_cards == frozenset() and follower.rules.count == 1
    follower.apply(b"bad", b"{")
    assert follower.invalid == 1 and follower.rules.count == 1
