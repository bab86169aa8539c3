"""GET /healthz bodies: the status for anyone; the details (store, paths, engine URL) for an admin's token."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class EngineHealth(BaseModel):
    healthy: bool
    url: str | None = None


class HealthDetails(BaseModel):
    """Only for an admin's credential: where things are."""

    store: str
    base_model: str
    loaded_adapters: list[str]
    active_model: str
    access: str
    nightly: str
    slack: str
    slack_mode: str
    # Where cycles train: "local" (this process), or "worker" (queued here, trained by `tuneloop worker`).
    training: str = "local"
    # The version the merged engine's weights hold and serve at base speed; None: off, starting or reloading.
    merged_version: str | None = None


class Health(BaseModel):
    status: Literal["ok", "starting", "degraded"]
    engine: EngineHealth
    active_adapter: str
    details: HealthDetails | None = None
