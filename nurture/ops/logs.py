"""Log records as text or JSON, with a stable ``action`` key and no secrets.

``configure_logging`` is called once, at the edge (the CLI's global options).
With ``log_format = "json"`` every record is one line holding one JSON object::

    {"time": "2026-11-27T14:30:00.123+00:00", "level": "INFO",
     "logger": "nurture.app.worker", "action": "dispatch.pass",
     "message": "dispatch at ...: sent 12, ..."}

``action`` is what a log search filters on, and it does not change when a
message's wording does: the important calls pass it
(``log.info(..., extra={"action": "dispatch.pass"})``); any other record gets
one derived from its logger's name (``nurture.web.signup`` -> ``web.signup``).

No secret reaches the output at any level: the HTTP libraries that log
request headers at DEBUG (``urllib3``, ``httpx``, ``python_http_client``,
the ``sendgrid`` library) are kept at WARNING, and every formatted record,
text or JSON, goes through :func:`redact` (``Authorization`` values, bearer
tokens, SendGrid keys, and the tokens in the paths of subscribers' links,
which uvicorn's access log would otherwise show) as a last line of defence. Email bodies are never
logged by nurture's own code.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HANDLER_NAME = "nurture"
"""The name of the handler :func:`configure_logging` installs."""

# Libraries that log request lines, headers or bodies at DEBUG (the sendgrid
# client's python_http_client logs the Authorization header), or are chatty
# (markdown_it logs every rule it tries on every template it renders).
QUIET_LOGGERS = (
    "apscheduler",
    "httpx",
    "httpcore",
    "urllib3",
    "python_http_client",
    "sendgrid",
    "alembic",
    "markdown_it",
    "multipart",
    "asyncio",
)

_SECRET = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+|basic\s+)?[^\s\"',}]+"
    r"|(bearer\s+)[^\s\"',}]+"
    r"|SG\.[\w-]+\.[\w-]+"
)


# The signed token of a link that acts for a subscriber (confirm, leave, manage
# preferences, a tracked click or open): whoever reads it in an access log
# could use it.
_CAPABILITY = re.compile(r"(/(?:confirm|unsubscribe|preferences|c|o)/)[\w.~%=-]+")


def redact(text: str) -> str:
    """``text`` with Authorization values, bearer tokens, SendGrid keys and the
    tokens of subscribers' links hidden."""
    text = _SECRET.sub(lambda m: f"{m.group(1) or m.group(2) or ''}[redacted]", text)
    return _CAPABILITY.sub(r"\1[redacted]", text)


def action_of(record: logging.LogRecord) -> str:
    """The record's ``action``: the one its call gave, else its logger's name
    without the ``nurture.`` prefix (``nurture`` alone is ``nurture``)."""
    given = getattr(record, "action", None)
    if isinstance(given, str) and given:
        return given
    name = record.name
    return name.removeprefix("nurture.") if name.startswith("nurture.") else name


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO-8601), level, logger, action,
    message, and the traceback as ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "action": action_of(record),
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """The text format, redacted like the JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (a test
    runner that swaps it, then closes its own, leaves no dead stream here)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def configure_logging(
    log_format: LogFormat = "text", *, verbose: bool = False, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every record to ``stream`` (default: stderr) in ``log_format``.

    Replaces the handler an earlier call installed (so a second call
    reconfigures rather than doubles the output), leaves any other handler of
    the root logger alone (a test runner's), and returns the handler installed.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}: {log_format!r}")
    handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else RedactingFormatter(TEXT_FORMAT)
    )
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
