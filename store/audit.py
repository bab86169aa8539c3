"""Audit events: every admin action, allowed or refused, and the tuning cycle's own decisions.

An action and its audit event are one transaction: a caller that changes something stages the event with
`add_audit` (or `record_audit(..., commit=False)`) and commits both together, so that neither is ever
stored without the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from store.models import AuditEvent
from store.pages import Page, newest_first


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """An audit event not yet written: handed to the code that performs the action, which writes it in its commit."""

    actor: str
    source: str
    action: str
    target: str | None = None
    outcome: str = "ok"
    detail: Mapping[str, Any] = field(default_factory=dict)


def record_audit(
    *,
    session: Session,
    actor: str,
    source: str,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    detail: Mapping[str, Any] | None = None,
    commit: bool = True,
) -> AuditEvent:
    """Write an audit event; with `commit=False` it is only flushed, and the caller's commit stores it."""
    # The target may come from a user (a version name): it is bounded here, whatever the caller checked.
    target = target[:128] if target is not None else None
    event = AuditEvent(
        actor=actor, source=source, action=action, target=target, outcome=outcome, detail=dict(detail or {})
    )
    session.add(event)
    if not commit:
        session.flush()  # a bad row fails here, before the caller commits its own change with it
        return event
    session.commit()
    session.refresh(event)
    return event


def add_audit(*, session: Session, entry: AuditEntry) -> AuditEvent:
    """Stage `entry` in the caller's transaction; it is stored by the caller's commit, or not at all."""
    return record_audit(
        session=session,
        actor=entry.actor,
        source=entry.source,
        action=entry.action,
        target=entry.target,
        outcome=entry.outcome,
        detail=entry.detail,
        commit=False,
    )


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
