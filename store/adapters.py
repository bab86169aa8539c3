"""Adapter versions and which one serves. At most one row is active (a unique index says so); "base" means no adapter.

Every service process follows the active row: on PostgreSQL a change is also announced on the
`ACTIVE_CHANNEL` notification channel in the same transaction, so listeners hear it as it commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from store.models import BASE_VERSION, AdapterStatus, AdapterVersion, utcnow


def ensure_base_version(*, session: Session) -> AdapterVersion:
    """The base model is a version too, so that rollback to it is an ordinary rollback."""
    base = get_version(session=session, version=BASE_VERSION)
    if base is not None:
        return base
    base = AdapterVersion(version=BASE_VERSION, path=None, status=AdapterStatus.ready)
    if get_active_version(session=session) is None:
        base.status = AdapterStatus.active
        base.promoted_at = utcnow()
    session.add(base)
    try:
        session.commit()
    except IntegrityError:
        # Another process started at the same moment and wrote it first: theirs is the same row.
        session.rollback()
        stored = get_version(session=session, version=BASE_VERSION)
        if stored is None:
            raise
        return stored
    session.refresh(base)
    return base


def next_version_name(*, session: Session) -> str:
    rows = session.exec(select(AdapterVersion.version).where(AdapterVersion.version != BASE_VERSION)).all()
    numbers = [int(v[1:]) for v in rows if v.startswith("v") and v[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1:04d}"


def register_version(
    *,
    session: Session,
    version: str,
    path: str,
    run_id: int | None,
    metrics: dict[str, Any] | None = None,
    commit: bool = True,
) -> AdapterVersion:
    """A new `ready` version; with `commit=False` the caller commits it (e.g. with the import's audit event)."""
    adapter = AdapterVersion(version=version, path=path, run_id=run_id, metrics=metrics or {})
    session.add(adapter)
    _save(session, adapter, commit=commit)
    return adapter


def get_version(*, session: Session, version: str) -> AdapterVersion | None:
    return session.exec(select(AdapterVersion).where(AdapterVersion.version == version)).first()


def get_active_version(*, session: Session) -> AdapterVersion | None:
    return session.exec(select(AdapterVersion).where(AdapterVersion.status == AdapterStatus.active)).first()


def list_versions(*, session: Session) -> list[AdapterVersion]:
    return list(session.exec(select(AdapterVersion).order_by(col(AdapterVersion.id))).all())


ACTIVE_CHANNEL = "tuneloop_active_version"


def mark_active(*, session: Session, version: str, commit: bool = True) -> AdapterVersion:
    """Make `version` the only active row, in one transaction, and announce it to the other processes.

    With `commit=False` the change is only flushed: the caller commits it together with its audit event.
    Two processes promoting at once: the unique index refuses the second commit (IntegrityError); the caller
    decides whether to try again on what the first one wrote.
    """
    target = get_version(session=session, version=version)
    if target is None:
        raise LookupError(f"adapter version {version} does not exist")
    # The old row steps down before the new one steps up, in this order, or the unique index refuses the flush.
    session.execute(
        update(AdapterVersion)
        .where(col(AdapterVersion.status) == AdapterStatus.active, col(AdapterVersion.version) != version)
        .values(status=AdapterStatus.ready)
        .execution_options(synchronize_session="fetch")
    )
    session.flush()
    target.status = AdapterStatus.active
    target.promoted_at = utcnow()
    session.add(target)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Delivered when (and only if) this transaction commits.
        session.execute(text("SELECT pg_notify(:channel, :version)"), {"channel": ACTIVE_CHANNEL, "version": version})
    _save(session, target, commit=commit)
    return target


def active_stamp(*, session: Session) -> tuple[str, str] | None:
    """What serves and since when, in one cheap read: the key a process compares with what it serves."""
    row = session.exec(
        select(AdapterVersion.version, func.coalesce(AdapterVersion.promoted_at, AdapterVersion.created_at)).where(
            AdapterVersion.status == AdapterStatus.active
        )
    ).first()
    return None if row is None else (row[0], str(row[1]))


def previous_active_version(*, session: Session) -> AdapterVersion | None:
    """The version that served before the current one: the target of a plain rollback."""
    statement = (
        select(AdapterVersion)
        .where(AdapterVersion.status != AdapterStatus.active, col(AdapterVersion.promoted_at).is_not(None))
        .order_by(col(AdapterVersion.promoted_at).desc(), col(AdapterVersion.id).desc())
    )
    return session.exec(statement).first()


def set_version_status(*, session: Session, version: str, status: str, commit: bool = True) -> AdapterVersion:
    """Set a version's status; with `commit=False` the caller commits it (e.g. with the rejection's audit event)."""
    adapter = get_version(session=session, version=version)
    if adapter is None:
        raise LookupError(f"adapter version {version} does not exist")
    adapter.status = status
    session.add(adapter)
    _save(session, adapter, commit=commit)
    return adapter


def set_pinned(*, session: Session, version: str, pinned: bool, commit: bool = True) -> AdapterVersion:
    """Pin (retention keeps it whatever its age) or unpin a version; with `commit=False` the caller commits."""
    adapter = get_version(session=session, version=version)
    if adapter is None:
        raise LookupError(f"adapter version {version} does not exist")
    adapter.pinned = pinned
    session.add(adapter)
    _save(session, adapter, commit=commit)
    return adapter


def mark_pruned(*, session: Session, version: str) -> AdapterVersion:
    """Record that retention removed the version's files; flushed only, the caller commits with its audit event."""
    adapter = get_version(session=session, version=version)
    if adapter is None:
        raise LookupError(f"adapter version {version} does not exist")
    adapter.pruned_at = utcnow()
    session.add(adapter)
    _save(session, adapter, commit=False)
    return adapter


def update_version_metrics(*, session: Session, version: str, metrics: dict[str, Any]) -> AdapterVersion:
    """Merge `metrics` into the version's metrics (e.g. the gate's scores after evaluation)."""
    adapter = get_version(session=session, version=version)
    if adapter is None:
        raise LookupError(f"adapter version {version} does not exist")
    adapter.metrics = {**adapter.metrics, **metrics}
    session.add(adapter)
    session.commit()
    session.refresh(adapter)
    return adapter


def _save(session: Session, row: AdapterVersion, *, commit: bool) -> None:
    if commit:
        session.commit()
        session.refresh(row)
    else:
        session.flush()  # in the caller's transaction: its commit (or rollback) decides
