"""A labelled history as training and the alert budget read it: a card and a terminal id on every
row, in event-time order, as the stream would have seen it."""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger(__name__)

ENTITY_IDS = {"customer_id": "card", "terminal_id": "terminal"}


def with_entity_ids(history: pd.DataFrame) -> pd.DataFrame:
    """The history with a card and a terminal id on every row: a history without one of the columns
    gets a single constant id for it, and a warning that those features then say nothing."""
    missing = [column for column in ENTITY_IDS if column not in history.columns]
    for column in missing:
        log.warning("history has no %s column: its transactions count as those of one %s, so the %s "
                    "features carry no information", column, ENTITY_IDS[column], ENTITY_IDS[column])
    return history.assign(**{column: "unknown" for column in missing}) if missing else history


def in_event_order(history: pd.DataFrame) -> pd.DataFrame:
    """The history with entity ids on every row, sorted by event time (ties keep their order)."""
    return with_entity_ids(history).sort_values("timestamp", kind="stable").reset_index(drop=True)
