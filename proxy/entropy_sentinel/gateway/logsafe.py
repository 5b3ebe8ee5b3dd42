"""Log lines that carry nothing a client sent.

aiohttp's server logs a malformed request with its exception, whose message quotes the raw request
line or header (an ``Authorization: Bearer sk-...`` included). The filter here keeps such a record
but replaces its exception with :func:`describe_exception`: the type, the status, and where it was
raised, never the message. Client protocol errors drop to WARNING: they are the client's, not ours.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

#: the logger the proxy's HTTP server writes to (passed to aiohttp as the request handler's logger)
SERVER_LOG = logging.getLogger("entropy_sentinel.gateway.http")
#: aiohttp's own loggers that may carry request data
_AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.internal")


def describe_exception(exc: BaseException) -> str:
    """``TypeName [status] at file.py:12 in func <- ...``: never the message, which may quote input."""
    text = type(exc).__qualname__
    status = getattr(exc, "code", None) if isinstance(exc, HttpProcessingError) else None
    if isinstance(status, int):
        text += f" [{status}]"
    frames = traceback.extract_tb(exc.__traceback__)[-3:] if exc.__traceback__ is not None else []
    if frames:
        text += " at " + " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))
    return text


def _is_client_error(exc: BaseException) -> bool:
    return isinstance(exc, HttpProcessingError | RequestPayloadError | ConnectionError)


class RedactClientData(logging.Filter):
    """Rewrites a record with an exception into one line without the exception's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        record.msg = f"{record.getMessage()}: {describe_exception(exc)}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        if _is_client_error(exc) and record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


REDACT = RedactClientData()


def install_redaction() -> None:
    """Filter the proxy's server logger and aiohttp's (idempotent)."""
    for name in (SERVER_LOG.name, *_AIOHTTP_LOGGERS):
        logger = logging.getLogger(name)
        if REDACT not in logger.filters:
            logger.addFilter(REDACT)
