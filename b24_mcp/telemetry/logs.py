"""The server's log on stderr: readable text (the default), or one JSON object per line (`B24_LOG_FORMAT=json`).

Every record of the process goes through the one handler set here (uvicorn's and the SDK's too: the HTTP server
leaves logging to it), so all lines share the format. A JSON line has `ts`, `level`, `logger`, `message`, then the
record's own fields: `request_id` and, with sign-in, `user_id` during a tool call (`tracing.CallFields`), and on a
tool call's line `tool`, `status`, `error`, `duration_ms`. JSON escapes every control character, so a line stays
one line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from b24_mcp.telemetry.tracing import CallFields

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has; the rest of its attributes are the fields a call passed (`extra=`) or a filter added.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def configure(level: str, log_format: str = "text") -> logging.Handler:
    """Send the process's log records of `level` and above to stderr in `log_format` (`text` or `json`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(CallFields())
    logging.basicConfig(level=level, handlers=[handler])
    return handler


class JsonLines(logging.Formatter):
    """One JSON object per record: `ts`, `level`, `logger`, `message`, the record's own fields, `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),  # first, as in journal lines
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)  # ASCII only: no character a terminal or a pipeline acts on


def json_formatter() -> logging.Formatter:
    """The formatter of `B24_LOG_FORMAT=json`: one JSON object per record."""
    return JsonLines()
