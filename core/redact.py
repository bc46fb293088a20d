"""What an answer may say about a failure: never where the internals live, nor what a user's file holds."""

from __future__ import annotations

import re

_ADDRESS = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"]+"  # a URL
                      r"|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\S*"  # an IPv4 address, with its port
                      r"|\b[a-z][\w.-]*:\d{2,5}\b\S*", re.IGNORECASE)  # host:port


def without_addresses(text: str) -> str:
    """`text` with URLs and host:port pairs replaced: answers never show where the internals live
    (the logs keep the full text)."""
    return _ADDRESS.sub("<address>", text)


def failure(exc: Exception, read_a_file: bool, our_own: tuple[type[Exception], ...] = ()) -> str:
    """`exc` as a job's error: its type and message without addresses; but when the job read a user's
    file, only its type, since a library's message may echo the file's values (exceptions of `our_own`
    types say only what we wrote, and stay whole)."""
    if read_a_file and not isinstance(exc, our_own):
        return (f"{type(exc).__name__}: the data file could not be used as it is "
                f"(the API's log has the job's last lines)")
    message = without_addresses(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
