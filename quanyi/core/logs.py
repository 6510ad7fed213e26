"""Structured logs: one JSON object per line on stderr, with card numbers and credentials
masked in every record before any handler sees it."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from quanyi.core.pan import MASK, mask_pans

# `scheme://user:password@host` -> `scheme://user:***@host`; `password=...` in a DSN.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^@/\s]*@")
_KEYWORD_PASSWORD = re.compile(
    r"(?i)\b(?P<key>password|passwd|pwd|secret|token)(?P<eq>\s*=\s*)[^\s&,;'\"]+"
)
# A bearer token, however it is quoted; an Authorization header's value, whatever its scheme.
_BEARER = re.compile(r"(?P<scheme>\b(?i:bearer)|\bBasic)(?P<gap>\s+)[^\s'\",;)\]}]+")
_AUTHORIZATION = re.compile(r"(?i)(?P<name>authorization['\"]?\s*[:=,]\s*['\"]?)[^'\"\r\n]+")


def mask_credentials(text: str) -> str:
    """Passwords in URLs and DSNs and bearer tokens replaced by `***`. Each pattern runs only
    when its marker is in the text: most log lines have none."""
    lower = text.lower()
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m["head"] + "***@", text)
    if "=" in text:
        text = _KEYWORD_PASSWORD.sub(lambda m: m["key"] + m["eq"] + "***", text)
    if "authorization" in lower:
        text = _AUTHORIZATION.sub(lambda m: m["name"] + "***", text)
    if "bearer" in lower or "Basic" in text:
        text = _BEARER.sub(lambda m: m["scheme"] + m["gap"] + "***", text)
    return text


# Any digit of any script: what the fallback masks when redaction itself failed.
_ANY_DIGIT = re.compile(r"\d")


def redact(text: str) -> str:
    """What may be written to a log or an error message: no card number, no credential. Never
    raises: text that cannot be redacted has every digit masked (and credentials, if that much
    works) rather than breaking the caller or going out as it is."""
    try:
        return mask_pans(mask_credentials(text))
    except Exception:
        return _conservative(text)


def _conservative(text: Any) -> str:
    try:
        text = str(text)
    except Exception:
        return "<unprintable>"
    try:
        text = mask_credentials(text)
    except Exception:
        pass
    return _ANY_DIGIT.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """Masks a record in place: its message with the arguments merged in, its exception and
    stack text. Installed on our handler, and at record creation (install_redaction) so that
    every handler, the test suite's included, sees only the masked record."""

    _exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self._exception_formatter)
        return True


def redact_record(record: logging.LogRecord, formatter: logging.Formatter) -> None:
    """Masks the record in place. Never raises (it runs inside every logging call): whatever
    cannot be redacted is replaced by a conservative mask of it."""
    if getattr(record, "_redacted", False):
        return
    record._redacted = True
    try:
        _redact_record(record, formatter)
    except Exception:
        record.msg, record.args = _conservative(_message(record)), ()
        record.exc_info = None
        record.exc_text = _conservative(record.exc_text) if record.exc_text else None
        record.stack_info = _conservative(record.stack_info) if record.stack_info else None


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string: keep the parts as text
        try:
            return f"{record.msg} {record.args}"
        except Exception:
            return "<unprintable log message>"


def _redact_record(record: logging.LogRecord, formatter: logging.Formatter) -> None:
    message = _message(record)
    masked = redact(message)
    if masked != message or not isinstance(record.msg, str):
        record.msg, record.args = masked, ()
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = formatter.formatException(record.exc_info)
        # Only the masked text goes on: no handler can render the exception itself again.
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_installed = False


def install_redaction() -> None:
    """Every log record of the process is masked when it is made (idempotent)."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redact_record(record, formatter)
        return record

    logging.setLogRecordFactory(redacted_record)
    _installed = True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info or record.exc_text:
            entry["exc"] = record.exc_text or (
                self.formatException(record.exc_info) if record.exc_info else ""
            )
        return orjson.dumps(entry, default=str).decode()


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    """The JSON-lines handler, masking what reaches it."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    return handler


def setup_logging(level: str = "INFO") -> None:
    install_redaction()
    root = logging.getLogger()
    root.handlers[:] = [json_handler()]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
