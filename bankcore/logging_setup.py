"""Process-wide logging: JSON lines to `<log_dir>/<service>.log` and stderr, every handler redacting."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from bankcore.redaction import RedactingFilter, redact
from bankcore.settings import Settings

# Marks the handlers this module installed, so a second call replaces them instead of doubling output.
_OWNED = "_bankbot_logging"

# LogRecord attributes that are not caller-supplied `extra=` fields.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO-8601 UTC), level, logger, service, message, extras, exc."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service_name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                # Extras bypass the filter's message rewrite, so they are redacted here.
                entry[key] = value if isinstance(value, int | float | bool | None) else redact(str(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings, service_name: str, level: int = logging.INFO) -> None:
    """Install the file and stderr handlers on the root logger; calling it again replaces them."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OWNED, False):
            root.removeHandler(handler)
            handler.close()

    settings.log_dir.mkdir(parents=True, exist_ok=True)
    formatter = JsonLinesFormatter(service_name)
    handlers: list[logging.Handler] = [
        logging.FileHandler(settings.log_dir / f"{service_name}.log", encoding="utf-8"),
        logging.StreamHandler(sys.stderr),
    ]
    for handler in handlers:
        # A filter on the handler (not the logger) also sees records propagated from child loggers.
        handler.addFilter(RedactingFilter())
        handler.setFormatter(formatter)
        setattr(handler, _OWNED, True)
        root.addHandler(handler)
    root.setLevel(level)
