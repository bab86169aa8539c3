"""Structured logs: one `key=value` line per event."""

from __future__ import annotations

import logging

from training.redact import RedactingFilter

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format=FORMAT)
    # On the handlers, not a logger: a logger's filters miss records that propagate up from child loggers.
    for handler in logging.getLogger().handlers:
        _add_redaction(handler)
    # uvicorn gives these loggers handlers of their own later; a filter on the logger itself survives that.
    for name in UVICORN_LOGGERS:
        _add_redaction(logging.getLogger(name))
    # httpx logs every request at INFO: the engine is polled, so keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _add_redaction(target: logging.Handler | logging.Logger) -> None:
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
