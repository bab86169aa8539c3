"""What every listener needs, handed to each `register(app, deps)`."""

from __future__ import annotations

from dataclasses import dataclass

from bot.dedupe import EventDeduper
from serving.access import AccessPolicy
from serving.api.deps import Services


@dataclass(kw_only=True)
class BotDeps:
    services: Services
    access: AccessPolicy
    deduper: EventDeduper
    # At most one chat.update per interval while an answer streams (Slack allows about one a second).
    stream_interval_s: float = 1.0
    # How often `/tuneloop retrain` looks at its run until the run finishes.
    run_poll_interval_s: float = 2.0
