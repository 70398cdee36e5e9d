"""Structured logging: `key=value` text for people, or one JSON object per line for machines.

Call sites pass fields with `extra={"fields": {...}}`; the formatter renders them. Secrets are
never passed as fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

import dutyd

_DUTYD_DIR = str(Path(dutyd.__file__).resolve().parent)
_WARNINGS_LOG = logging.getLogger("dutyd.warnings")
# Library warnings raised before logging is configured (most come at import time), kept until
# `configure` can write them; bounded so a chatty import cannot grow it without limit.
_PENDING_LIMIT = 100
_pending: list[logging.LogRecord] = []
_seen: set[tuple[str, str, str, int]] = set()
_logging_configured = False


def _utc(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        parts = [_utc(record), f"{record.levelname:<7}", record.name, record.getMessage()]
        line = " ".join(parts)
        if fields:
            line += " " + " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (asyncssh logs every channel) stays out of the duty engineer's console.
    for noisy in ("asyncssh", "aiohttp.access", "pysnmp", "pyModbusTCP"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # asyncpg's pool logs a traceback at each failed try to reopen its idle connections while
    # the database is away; the store's health says so once per fault (storage/health.py).
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
    global _logging_configured
    _logging_configured = True
    while _pending:
        _emit(_pending.pop(0))


def _emit(record: logging.LogRecord) -> None:
    if _WARNINGS_LOG.isEnabledFor(record.levelno):
        _WARNINGS_LOG.handle(record)


def _is_dutyd_code(filename: str) -> bool:
    try:
        relative = Path(filename).resolve().relative_to(_DUTYD_DIR)
    except (OSError, ValueError):
        return False
    # A source checkout is the package itself, and its virtualenv may sit inside it.
    return "site-packages" not in relative.parts


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if _is_dutyd_code(filename):
        # dutyd's own warnings are dutyd's to fix: they stay as loud as Python makes them.
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    key = (category.__name__, str(message), filename, lineno)
    if key in _seen:
        return
    _seen.add(key)
    record = _WARNINGS_LOG.makeRecord(
        _WARNINGS_LOG.name,
        logging.DEBUG,
        filename,
        lineno,
        "library warning: %s: %s",
        (category.__name__, message),
        None,
        extra={"fields": {"file": filename, "line": lineno}},
    )
    if _logging_configured:
        _emit(record)
    elif len(_pending) < _PENDING_LIMIT:
        _pending.append(record)


_original_showwarning = warnings.showwarning


def route_library_warnings() -> None:
    """Send third-party libraries' warnings to the debug log, each once, never to the terminal.

    A deprecation inside asyncssh or pysnmp is their maintainers' news, not the duty
    engineer's: printed before `dutyd check-config`'s answer it reads as "dutyd is broken".
    Call before importing the collectors: most of these warnings fire at import time.
    """
    global _original_showwarning
    if warnings.showwarning is not _show_warning:
        _original_showwarning = warnings.showwarning
        warnings.showwarning = _show_warning
