"""Structured logging for the shells (design §6 'Security'): plain text by default, JSON lines with
``MONITOR_LOG_JSON=true``. Log records carry ids (record, rule, alert, ticket) passed as ``extra``;
personal data is never logged — callers pass ids, and any ``certno``/``psn_name``/``psn_no`` key in
``extra`` is replaced by a mask before it is written."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from monitor.privacy import mask_certno, mask_name

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
_PERSONAL = {"certno": mask_certno, "psn_name": mask_name, "psn_no": lambda v: "***" if v else v}


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_"):
            continue
        out[key] = _PERSONAL[key](value) if key in _PERSONAL else value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extra(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = _extra(record)
        return base + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def setup_logging(json_lines: bool = False, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    text = TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(JsonFormatter() if json_lines else text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
