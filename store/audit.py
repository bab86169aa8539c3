"""Audit events: every admin action, allowed or refused."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from store.models import AuditEvent
from store.pages import Page, newest_first


def record_audit(
    *,
    session: Session,
    actor: str,
    source: str,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    # The target may come from a user (a version name): it is bounded here, whatever the caller checked.
    target = target[:128] if target is not None else None
    event = AuditEvent(actor=actor, source=source, action=action, target=target, outcome=outcome, detail=detail or {})
    session.add(event)
    session.commit()
    session.refresh(event)
    return event


def list_audit(*, session: Session, limit: int = 100) -> list[AuditEvent]:
    return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)).all())


def page_audit(
    *,
    session: Session,
    limit: int,
    before: int | None = None,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
) -> Page[AuditEvent]:
    statement = select(AuditEvent)
    if actor is not None:
        statement = statement.where(AuditEvent.actor == actor)
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    if outcome is not None:
        statement = statement.where(AuditEvent.outcome == outcome)
    return newest_first(session=session, statement=statement, id_column=AuditEvent.id, limit=limit, before=before)
