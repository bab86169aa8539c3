"""Adapter versions and which one serves. Exactly one row is active; "base" means no adapter."""

from __future__ import annotations

from typing import Any

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
    session.commit()
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


def mark_active(*, session: Session, version: str, commit: bool = True) -> AdapterVersion:
    """Make `version` the only active row, in one transaction.

    With `commit=False` the change is only flushed: the caller commits it together with its audit event.
    """
    target = get_version(session=session, version=version)
    if target is None:
        raise LookupError(f"adapter version {version} does not exist")
    for row in session.exec(select(AdapterVersion).where(AdapterVersion.status == AdapterStatus.active)).all():
        if row.version != version:
            row.status = AdapterStatus.ready
            session.add(row)
    target.status = AdapterStatus.active
    target.promoted_at = utcnow()
    session.add(target)
    _save(session, target, commit=commit)
    return target


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
