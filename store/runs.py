"""Training runs: one row per tuning cycle, updated as it goes."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from store.models import FINISHED_RUN_STATUSES, UNFINISHED_RUN_STATUSES, RunStatus, TrainingRun, utcnow
from store.pages import Page, newest_first


def create_run(*, session: Session, trigger: str, triggered_by: str | None) -> TrainingRun:
    run = TrainingRun(trigger=trigger, triggered_by=triggered_by)
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def get_run(*, session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def list_runs(*, session: Session, limit: int = 20) -> list[TrainingRun]:
    return list(session.exec(select(TrainingRun).order_by(col(TrainingRun.id).desc()).limit(limit)).all())


def all_runs(*, session: Session) -> list[TrainingRun]:
    """Every run, oldest first (retention matches run folders to their records)."""
    return list(session.exec(select(TrainingRun).order_by(col(TrainingRun.id))).all())


def page_runs(*, session: Session, limit: int, before: int | None = None) -> Page[TrainingRun]:
    return newest_first(
        session=session, statement=select(TrainingRun), id_column=TrainingRun.id, limit=limit, before=before
    )


def update_run(*, session: Session, run_id: int, **changes: Any) -> TrainingRun:
    """Set columns; dict columns (counts, metrics, timings, progress) are merged, not replaced."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise LookupError(f"run {run_id} does not exist")
    session.refresh(run)
    for name, value in changes.items():
        current = getattr(run, name)
        if isinstance(current, dict) and isinstance(value, dict) and name != "progress":
            value = {**current, **value}
        setattr(run, name, value)
    if changes.get("status") == RunStatus.running and run.started_at is None:
        run.started_at = utcnow()
    if changes.get("status") in FINISHED_RUN_STATUSES:
        run.finished_at = utcnow()
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def last_finished_run(*, session: Session) -> TrainingRun | None:
    """The newest run that trained (succeeded); nightly runs compare new feedback against it."""
    statement = (
        select(TrainingRun).where(TrainingRun.status == RunStatus.succeeded).order_by(col(TrainingRun.id).desc())
    )
    return session.exec(statement).first()


def unfinished_runs(*, session: Session) -> list[TrainingRun]:
    statement = select(TrainingRun).where(col(TrainingRun.status).in_(UNFINISHED_RUN_STATUSES))
    return list(session.exec(statement).all())
