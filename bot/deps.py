"""What every listener needs, handed to each `register(app, deps)`."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.dedupe import EventDeduper
from bot.streaming import StreamingSupport
from serving.access import AccessPolicy
from serving.api.deps import Services


@dataclass(kw_only=True)
class BotDeps:
    services: Services
    access: AccessPolicy
    deduper: EventDeduper
    # Slack's chat streaming methods, and where Slack refused them (then a placeholder is edited instead).
    streaming: StreamingSupport = field(default_factory=StreamingSupport)
    # After the first words, at most one partial update per interval while an answer streams: chat.update allows
    # about one a second per message, chat.appendStream (Tier 4) 100+ a minute per workspace.
    stream_interval_s: float = 1.0
    # How often `/tuneloop retrain` looks at its run until the run finishes.
    run_poll_interval_s: float = 2.0
