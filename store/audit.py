"""Audit events: every admin action, allowed or refused."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from store.models import AuditEvent


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
    event = AuditEvent(actor=actor, source=source, action=action, target=target, outcome=outcome, detail=detail or {})
    session.add(event)
    session.commit()
    session.refresh(event)
    return event


def list_audit(*, session: Session, limit: int = 100) -> list[AuditEvent]:
    return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)).all())
