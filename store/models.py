"""SQLModel tables: one per concept. The store imports nothing else of ours."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class InteractionStatus(StrEnum):
    pending = "pending"
    answered = "answered"
    failed = "failed"


class CorrectionStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class MemoryStatus(StrEnum):
    active = "active"
    retired = "retired"


class MemoryMode(StrEnum):
    """How an answer used the memory of reviewed answers."""

    prompt = "prompt"  # reviewed answers went into the prompt as facts
    direct = "direct"  # the reviewed answer was given as is, without a model call


class WordingSource(StrEnum):
    """Where a memory wording came from."""

    asked = "asked"  # the question of a corrected interaction
    paraphrase = "paraphrase"  # written by the base model, so that other wordings of the question are recalled


class AdapterStatus(StrEnum):
    ready = "ready"
    active = "active"
    rejected = "rejected"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"
    rejected = "rejected"  # trained, but the evaluation gate kept the active adapter


UNFINISHED_RUN_STATUSES = frozenset({RunStatus.queued, RunStatus.running})
FINISHED_RUN_STATUSES = frozenset(set(RunStatus) - UNFINISHED_RUN_STATUSES)

BASE_VERSION = "base"
# The shapes every surface (HTTP, Slack, CLI) accepts, checked before anything reaches the store.
MAX_ROW_ID = 2**63 - 1  # ids are 64-bit signed integers
VERSION_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,32}$"  # fits AdapterVersion.version (max_length 32)


class Interaction(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    user_id: str = Field(index=True, max_length=128)
    source: str = Field(max_length=32)
    channel: str | None = Field(default=None, max_length=64)
    thread_ts: str | None = Field(default=None, max_length=64)
    message_ts: str | None = Field(default=None, max_length=64)
    question: str = Field(sa_column=Column(Text, nullable=False))
    # Earlier turns of the thread, as chat messages: [{"role": ..., "content": ...}].
    context: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    answer: str | None = Field(default=None, sa_column=Column(Text))
    adapter_version: str | None = Field(default=None, max_length=32)
    latency_ms: int | None = None
    status: str = Field(default=InteractionStatus.pending, max_length=16)
    error: str | None = Field(default=None, sa_column=Column(Text))
    # The reviewed answer the memory gave this answer, if any, and how (MemoryMode).
    memory_entry_id: int | None = Field(default=None, index=True)
    memory_mode: str | None = Field(default=None, max_length=16)


class Feedback(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("interaction_id", "user_id", name="uq_feedback_interaction_user"),)

    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", index=True)
    user_id: str = Field(max_length=128)
    vote: int  # +1 or -1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Correction(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", index=True)
    author_id: str = Field(max_length=128)
    text: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=CorrectionStatus.pending, max_length=16, index=True)
    reviewer_id: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    reviewed_at: datetime | None = Field(default=None, index=True)


class AdapterVersion(SQLModel, table=True):
    # The database, not each process, is the truth about what serves: at most one row is active.
    __table_args__ = (
        Index(
            "uq_adapterversion_one_active",
            "status",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(unique=True, max_length=32)  # "base", "v0001", ...
    path: str | None = Field(default=None, sa_column=Column(Text))  # None for the base model
    run_id: int | None = Field(default=None, foreign_key="trainingrun.id")
    status: str = Field(default=AdapterStatus.ready, max_length=16)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None
    # Kept by retention whatever its age (set by an admin); the active and previous versions are kept anyway.
    pinned: bool = Field(default=False)
    # When retention removed its files; the row stays for the history (answers and audit events name it).
    pruned_at: datetime | None = None


class TrainingRun(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    trigger: str = Field(max_length=32)  # cli, api, nightly, slack
    triggered_by: str | None = Field(default=None, max_length=128)
    status: str = Field(default=RunStatus.queued, max_length=16, index=True)
    stage: str | None = Field(default=None, max_length=32)
    # Live progress of the current stage: step, total, loss, eta_s.
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    timings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    adapter_version: str | None = Field(default=None, max_length=32)
    error: str | None = Field(default=None, sa_column=Column(Text))


class AuditEvent(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=128)
    source: str = Field(max_length=32)
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=128)
    outcome: str = Field(default="ok", max_length=16)  # ok, refused, failed
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ProcessedEvent(SQLModel, table=True):
    """An inbound event already taken for handling (a Slack event id, a message); a unique key dedupes redeliveries."""

    key: str = Field(primary_key=True, max_length=200)
    # Unix seconds, only for pruning old keys; not a timestamp anyone reads.
    claimed_at_s: int = Field(default_factory=lambda: int(utcnow().timestamp()), index=True)


class Lock(SQLModel, table=True):
    """A named lock held by one process (see store.locks)."""

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)  # host:pid:random, so a restarted process is a new holder
    acquired_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A user's API credential. Only its SHA-256 is kept: the token itself is shown once, at creation."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(index=True, max_length=128)
    # Tokens are 256 random bits, so a fast hash is enough (no salt or slow KDF needed against guessing).
    token_sha256: str = Field(unique=True, max_length=64)
    # The first characters, so that a listing tells tokens apart without revealing them.
    prefix: str = Field(max_length=16)
    label: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = Field(default=None, index=True)


class UiSession(SQLModel, table=True):
    """A signed-in web dashboard session: the cookie holds a random key, only its SHA-256 is kept here.

    It is tied to the API token it was opened with, so revoking the token ends the session at once.
    """

    id: int | None = Field(default=None, primary_key=True)
    key_sha256: str = Field(unique=True, max_length=64)
    user_id: str = Field(max_length=128)
    token_id: int = Field(foreign_key="apitoken.id", index=True)
    # Every form of the session carries it; a post without it is refused (cross-site request forgery).
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class MemoryEntry(SQLModel, table=True):
    """A reviewed answer the bot gives at once: the latest approved correction of a question group."""

    id: int | None = Field(default=None, primary_key=True)
    answer: str = Field(sa_column=Column(Text, nullable=False))
    correction_id: int | None = Field(default=None, foreign_key="correction.id")
    approved_by: str = Field(max_length=128)
    approved_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default=MemoryStatus.active, max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    # Moves forward on every change: other processes reload what changed since the newest stamp they saw.
    updated_at: datetime = Field(default_factory=utcnow, index=True)
    updated_by: str | None = Field(default=None, max_length=128)
    retired_at: datetime | None = None


class MemoryWording(SQLModel, table=True):
    """One wording of an entry's question, with its sentence embedding (float32, normalised)."""

    id: int | None = Field(default=None, primary_key=True)
    entry_id: int = Field(foreign_key="memoryentry.id", index=True)
    interaction_id: int | None = Field(default=None, foreign_key="interaction.id")
    text: str = Field(sa_column=Column(Text, nullable=False))
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    source: str = Field(default=WordingSource.asked, max_length=16)  # WordingSource
