"""Schemathesis hooks of the API fuzz run (test_api_fuzz.py), loaded through SCHEMATHESIS_HOOKS.

The stream refuses a transaction whose event time is more than a day past its clock (core/features.py
`invalid_transaction_reason`), and the API answers 422 naming `timestamp` rather than send one. A bound
that moves with the clock is one a JSON Schema cannot state, so the document gives the field's fixed
range and says the rule in words. A schema-valid body refused for that reason alone is not counted as
a failure; any other refusal still is. The rule itself is tested in test_pipeline.py."""

from __future__ import annotations

import schemathesis

TRANSACTION_BODIES = r"^/api/v1/fraud/(predict|score|explain)$"


@schemathesis.hook("filter_failure").apply_to(path_regex=TRANSACTION_BODIES)
def not_an_event_time_beyond_a_day_from_now(context, failure, case, response) -> bool:
    if failure.code != "ST202" or response.status_code != 422:
        return True
    try:
        fields = response.json()["error"]["fields"]
    except (ValueError, KeyError, TypeError):
        return True
    return not (len(fields) == 1 and fields[0]["field"] in ("timestamp", "transaction.timestamp")
                and "more than a day in the future" in fields[0]["message"])
