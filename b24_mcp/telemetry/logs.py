"""The server's log on stderr: readable text (the default), or one JSON object per line (`B24_LOG_FORMAT=json`).

Every record of the process goes through the one handler set here (uvicorn's and the SDK's too: the HTTP server
leaves logging to it), so all lines share the format. A JSON line has `ts`, `level`, `logger`, `message`, then the
record's own fields: `request_id` and, with sign-in, `user_id` during a tool call (`tracing.CallFields`), and on a
tool call's line `tool`, `status`, `error`, `duration_ms`. JSON escapes every control character, so a line stays
one line. The JSON formatter (python-json-logger) is imported only when asked for.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from b24_mcp.telemetry.tracing import CallFields

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, log_format: str = "text") -> logging.Handler:
    """Send the process's log records of `level` and above to stderr in `log_format` (`text` or `json`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(CallFields())
    logging.basicConfig(level=level, handlers=[handler])
    return handler


def json_formatter() -> logging.Formatter:
    """The formatter of `B24_LOG_FORMAT=json`: one JSON object per record."""
    from pythonjsonlogger.json import JsonFormatter

    class JsonLines(JsonFormatter):
        def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
            moment = datetime.fromtimestamp(record.created, UTC)
            log_data["ts"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # first, as journal lines
            super().add_fields(log_data, record, message_dict)

    return JsonLines(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
    )
