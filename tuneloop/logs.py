"""Structured logs: one `key=value` line per event."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format=FORMAT)
    # httpx logs every request at INFO: the engine is polled, so keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
