"""What each dashboard page shows: typed view models, built in worker threads and rendered by the templates."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from markupsafe import Markup
from pydantic import BaseModel, ConfigDict

from serving.api.admin.protocol import AuditEventPublic, RunPublic
from serving.api.interactions.protocol import CorrectionPublic, InteractionPublic
from serving.api.memory.protocol import MemoryEntryPublic


class View(BaseModel):
    # Rendered SVG (Markup) is not a pydantic type; views are built by us, so it is allowed as is.
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)


class DayCount(View):
    day: date
    answers: int


class VersionVotes(View):
    version: str
    up: int
    down: int

    @property
    def up_rate(self) -> float:
        return self.up / (self.up + self.down) if self.up + self.down else 0.0


class OverviewView(View):
    active_version: str
    active_since: datetime | None
    answers_per_day: list[DayCount]
    votes_by_version: list[VersionVotes]
    pending_corrections: int | None  # None: not shown to this role
    last_run: RunPublic | None
    next_run_at: datetime | None
    nightly: str
    answers_chart: Markup
    votes_chart: Markup


class PendingCorrection(View):
    id: int
    interaction_id: int
    author: str
    question: str
    answer: str | None
    answered_by_version: str | None
    correction: str
    created_at: datetime


class ReviewView(View):
    pending: list[PendingCorrection]
    pending_has_more: bool
    pending_next: int | None
    memory: list[MemoryEntryPublic]
    memory_query: str | None
    memory_status: str
    memory_has_more: bool
    memory_next: int | None


class VersionRow(View):
    version: str
    status: str
    active: bool
    run_id: int | None
    created_at: datetime
    promoted_at: datetime | None
    facts: float | None
    regression: float | None
    gate_reason: str | None


class GateSample(View):
    kind: str
    question: str
    candidate: str
    active: str
    candidate_score: float | None
    active_score: float | None


class VersionsView(View):
    active: str
    previous: str | None
    versions: list[VersionRow]
    runs: list[RunPublic]
    loss_chart: Markup
    gate_chart: Markup
    samples_version: str | None
    samples_against: str | None
    samples: list[GateSample]
    dataset_counts: dict[str, Any]
    dataset_run: int | None


class Progress(BaseModel):
    """The live progress of the newest unfinished run (GET /ui/progress.json); running False when none."""

    running: bool
    run_id: int | None = None
    status: str | None = None
    stage: str | None = None
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None


class ConfirmView(View):
    action: str  # promote, rollback or train
    version: str | None
    active: str
    question: str


class VoteCounts(View):
    up: int = 0
    down: int = 0


class InteractionRow(View):
    interaction: InteractionPublic
    votes: VoteCounts
    corrections: list[CorrectionPublic]


class FeedbackView(View):
    rows: list[InteractionRow]
    query: str | None
    user: str | None
    everyone: bool  # a reviewer sees everyone's; an employee only their own
    has_more: bool
    next_cursor: int | None


class AuditView(View):
    rows: list[AuditEventPublic]
    actor: str | None
    action: str | None
    outcome: str | None
    has_more: bool
    next_cursor: int | None
