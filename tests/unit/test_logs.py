"""Log events as one JSON object per line, with the request being served."""

from __future__ import annotations

import io
import json
import logging
import logging.config

from core.logs import REQUEST_ID, TRANSACTION_ID, logging_config


def test_each_event_is_one_json_line_with_its_level_logger_and_the_request_and_transaction_ids_in_force():
    config = logging_config("INFO", "json")
    stream = io.StringIO()
    config["handlers"]["default"].pop("stream")
    config["handlers"]["default"]["class"] = "logging.StreamHandler"
    logging.config.dictConfig(config)
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)
    log = logging.getLogger("fraud.test")
    log.info("outside a request")
    token, about = REQUEST_ID.set("req-42"), TRANSACTION_ID.set("t-1")
    try:
        log.warning("inside %s", "one")
    finally:
        REQUEST_ID.reset(token)
        TRANSACTION_ID.reset(about)
    outside, inside = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert outside["message"] == "outside a request" and outside["level"] == "INFO" and "request_id" not in outside
    assert inside == {**inside, "message": "inside one", "level": "WARNING", "logger": "fraud.test",
                      "request_id": "req-42", "transaction_id": "t-1"}
    assert "time" in inside
    logging.config.dictConfig(logging_config("INFO", "text"))
