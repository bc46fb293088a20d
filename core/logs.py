"""How processes log. The long-running ones (`fraud worker`, `fraud api`) write one JSON event per
line by default (FRAUD_LOG_FORMAT=json): time, level, logger, message, the id of the HTTP request
being served when there is one (ops_api/app.py puts it in the `X-Request-ID` response header too), and
the id of the transaction it is about when there is one.
Command-line tools write plain lines (FRAUD_LOG_FORMAT=text)."""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
TRANSACTION_ID: ContextVar[str | None] = ContextVar("transaction_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestContext(logging.Filter):
    """Adds `request_id` to every record logged while a request is served, and `transaction_id` while
    one transaction is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        transaction_id = TRANSACTION_ID.get()
        if transaction_id is not None:
            record.transaction_id = transaction_id
        return True


def logging_config(level: str | int = "INFO", fmt: str = "json") -> dict:
    """A logging.config.dictConfig for the root logger on stdout, as JSON or plain text."""
    formatter = ({"()": "pythonjsonlogger.json.JsonFormatter",
                  "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                  "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}
                 if fmt == "json" else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": RequestContext}},
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                 "formatter": "default", "filters": ["context"]}},
        "root": {"level": level if isinstance(level, int) else level.upper(), "handlers": ["default"]},
    }


def setup(level: str | int = "INFO", fmt: str = "json") -> None:
    logging.config.dictConfig(logging_config(level, fmt))
    for noisy in ("mlflow", "httpx", "httpx2", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
