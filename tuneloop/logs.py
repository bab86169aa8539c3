"""Structured logs: every line is one logfmt record, redacted.

    ts=2026-11-24T10:00:00.123Z level=info logger=serving.answers answer.start interaction=3 source=cli

Our messages are written as `"event key=%s key2=%s"`; the formatter renders each value on its own and quotes
it (JSON escapes) when it holds a space, a quote, `=` or a control character, so a value can never forge a
key. Any other message (a library's "Started server process [123]") goes out whole as `msg="..."`, a
traceback as `exc="..."` on the same line, and uvicorn's access records as `http.request client=... method=...
path=... status=...`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from training.redact import RedactingFilter

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
ACCESS_LOGGER = "uvicorn.access"
ACCESS_EVENT = "http.request client=%s method=%s path=%s status=%s"

# One bare word: no space, quote, `=` or backslash (and, checked apart, nothing unprintable).
_BARE = re.compile(r'[^\s"=\\]+')
_NAME = r"[A-Za-z_][\w.\-]*"
_VALUE = r'"(?:[^"\\]|\\.)*"|[^\s"]*'
_PAIR = re.compile(rf"(?P<key>{_NAME})=(?P<value>{_VALUE})")
# `event key=value key=value` (the event may be left out): a value is a quoted string or a run of anything but
# spaces and quotes.
_EVENT_TEMPLATE = re.compile(rf"(?:(?P<event>{_NAME})(?= |$))?(?P<pairs>(?:(?:^| ){_NAME}=(?:{_VALUE}))*)")
# A %-style conversion; `%%` consumes no argument.
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")


def logfmt_value(value: str) -> str:
    """`value` as a logfmt value: bare when it is one plain word, else a JSON string."""
    if value and _BARE.fullmatch(value) and value.isprintable():
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    # json leaves U+2028, U+0085 and friends raw; a line splitter would break the record there.
    return quoted if quoted.isprintable() else "".join(c if c.isprintable() else _escaped(c) for c in quoted)


def _escaped(character: str) -> str:
    code = ord(character)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


class LogfmtFormatter(logging.Formatter):
    """One logfmt line per record: `ts level logger`, then the event and its values (or `msg`), then `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = [
            f"ts={self.formatTime(record)}",
            f"level={logfmt_value(record.levelname.lower())}",
            f"logger={logfmt_value(record.name)}",
            self._body(record),
        ]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields.append(f"exc={logfmt_value(record.exc_text)}")
        if record.stack_info:
            fields.append(f"stack={logfmt_value(record.stack_info)}")
        return " ".join(fields)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"

    def _body(self, record: logging.LogRecord) -> str:
        try:
            template = record.msg
            if record.name == ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == 5:
                client, method, path, _http_version, status = record.args
                template, args = ACCESS_EVENT, (client, method, path, status)
                return _event(template, args) or f"msg={logfmt_value(template % args)}"
            if isinstance(template, str):
                event = _event(template, record.args)
                if event is not None:
                    return event
            return f"msg={logfmt_value(record.getMessage())}"
        except Exception:  # a formatter that raises prints "--- Logging error ---" instead of the line
            return f"msg={logfmt_value(str(record.msg))} args={logfmt_value(repr(record.args))}"


def _event(template: str, args: Any) -> str | None:
    """`event key=value ...` with each value rendered and quoted on its own; None if `template` has not that shape."""
    shape = _EVENT_TEMPLATE.fullmatch(template)
    if shape is None:
        return None
    positional = list(args) if isinstance(args, tuple) else []
    mapping = args if isinstance(args, Mapping) else None
    parts = [shape["event"]] if shape["event"] else []
    for pair in _PAIR.finditer(shape["pairs"]):
        value = pair["value"]
        quoted = value.startswith('"')
        if not args:  # logging leaves a message without arguments as it is: nothing to interpolate
            if quoted:
                value = json.loads(value)
        else:
            if quoted:
                value = value[1:-1]
            conversions = [c for c in _CONVERSION.findall(value) if c != "%%"]
            if any("*" in c for c in conversions):
                return None
            if mapping is not None:
                value = value % mapping
            else:
                taken, positional = positional[: len(conversions)], positional[len(conversions) :]
                if len(taken) < len(conversions):
                    return None
                value = value % tuple(taken)
        parts.append(f"{pair['key']}={logfmt_value(str(value))}")
    if positional or not parts:
        return None  # more arguments than conversions (logging's own rendering reports it), or an empty message
    return " ".join(parts)


def configure_logging(level: str = "INFO") -> None:
    """Logfmt on stderr for a process that has no logging set up yet; redaction on every root handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter())
    # Leaves a logging set-up already in place (a test's, an embedding program's) as it is.
    logging.basicConfig(level=level, handlers=[handler])
    # On the handlers, not a logger: a logger's filters miss records that propagate up from child loggers.
    for root_handler in logging.getLogger().handlers:
        _add_redaction(root_handler)
    # Where uvicorn is given its own logging config, it gives these loggers handlers of their own; a filter on the
    # logger itself survives that.
    for name in UVICORN_LOGGERS:
        _add_redaction(logging.getLogger(name))
    # Python's warnings would otherwise print raw, multi-line, to stderr.
    logging.captureWarnings(True)
    # httpx logs every request at INFO: the engine is polled, so keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _add_redaction(target: logging.Handler | logging.Logger) -> None:
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
