"""Admin actions and records: request and response bodies (the CLI and the bot read these types too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from serving.api.common import PageInfo, Strict, VersionName
from store.models import FINISHED_RUN_STATUSES, AdapterVersion, AuditEvent, TrainingRun


class PromoteRequest(Strict):
    version: VersionName


class RollbackRequest(Strict):
    version: VersionName | None = Field(default=None, description="Default: the version that served before.")


class ImportAdapterRequest(Strict):
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Absolute path of a PEFT LoRA folder on the service's host; it is copied, then checked.",
    )
    version: VersionName | None = Field(default=None, description="Default: the next vNNNN.")


class SwapResponse(BaseModel):
    active: str
    swap_ms: float | None


class TrainResponse(BaseModel):
    run_id: int


class RunPublic(BaseModel):
    id: int
    status: str
    stage: str | None
    trigger: str
    triggered_by: str | None
    progress: dict[str, Any]
    counts: dict[str, Any]
    metrics: dict[str, Any]
    timings: dict[str, Any]
    adapter_version: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES

    @property
    def gate(self) -> dict[str, Any]:
        gate = self.metrics.get("gate")
        return gate if isinstance(gate, dict) else {}

    @classmethod
    def from_row(cls, run: TrainingRun) -> RunPublic:
        return cls.model_validate(run, from_attributes=True)


class RunPage(PageInfo):
    runs: list[RunPublic]


class AdapterVersionPublic(BaseModel):
    version: str
    status: str
    active: bool
    run_id: int | None
    metrics: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None
    pinned: bool = False
    pruned_at: datetime | None = None

    @classmethod
    def from_row(cls, row: AdapterVersion, *, active: bool) -> AdapterVersionPublic:
        return cls(
            version=row.version,
            status=row.status,
            active=active,
            run_id=row.run_id,
            metrics=row.metrics,
            created_at=row.created_at,
            promoted_at=row.promoted_at,
            pinned=row.pinned,
            pruned_at=row.pruned_at,
        )


class AdaptersResponse(BaseModel):
    active: str
    versions: list[AdapterVersionPublic]


class StatusResponse(BaseModel):
    active_adapter: str
    loaded_adapters: list[str]
    last_run: RunPublic | None
    new_feedback_since_last_training: int
    access: str


class AuditEventPublic(BaseModel):
    id: int
    created_at: datetime
    actor: str
    source: str
    action: str
    target: str | None
    outcome: str
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, event: AuditEvent) -> AuditEventPublic:
        return cls.model_validate(event, from_attributes=True)


class AuditPage(PageInfo):
    events: list[AuditEventPublic]


class DatasetResponse(BaseModel):
    sft: list[dict[str, Any]]
    dpo: list[dict[str, Any]]
