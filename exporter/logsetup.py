"""logfmt or JSON log lines, with the structured fields passed through ``extra=``."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# A catch-all bound on one field of a log line: text from outside (Spacelift's errors) is cut
# where it enters; this keeps any other long value from turning into a megabyte line.
MAX_FIELD = 4096
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower().replace("warning", "warn"),
        "logger": record.name,
        "msg": _bounded(record.getMessage()),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = _bounded(value)
    if record.exc_info and record.exc_info[1] is not None:
        out.setdefault("error", f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        # The traceback, kept on one line (logfmt escapes the newlines), for bug reports.
        out["stacktrace"] = "".join(traceback.format_exception(*record.exc_info)).strip()
    return out


def _bounded(value: Any) -> Any:
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    return text if len(text) <= MAX_FIELD else f"{text[:MAX_FIELD]}...({len(text)} characters)"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\r\t'):
        text = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + text.replace("\n", "\\n").replace("\r", "\\r") + '"'
    return text


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # Libraries' own chatter (every HTTP request, every job run) is not the operator's news.
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, _LEVELS[level]))
