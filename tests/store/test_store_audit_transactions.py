"""An action and its audit event are one commit, on SQLite and PostgreSQL: both are stored, or neither."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import StatementError
from sqlmodel import select

from store import adapters as adapter_repo
from store import audit as audit_repo
from store.audit import AuditEntry
from store.models import BASE_VERSION, AdapterStatus, AdapterVersion, AuditEvent

PROMOTE = AuditEntry(actor="U_ADMIN", source="api", action="promote", target="v0002")


def seed(session) -> None:
    """base, v0001 active, v0002 ready."""
    adapter_repo.ensure_base_version(session=session)
    for name in ("v0001", "v0002"):
        adapter_repo.register_version(session=session, version=name, path=f"/adapters/{name}", run_id=None)
    adapter_repo.mark_active(session=session, version="v0001")


def stored_version(session, name: str) -> AdapterVersion:
    version = adapter_repo.get_version(session=session, version=name)
    assert version is not None
    return version


def stored_state(fresh_session) -> tuple[list[str], list[tuple[str, str | None]]]:
    """What another connection sees: the active versions, and the audit events (action, target)."""
    with fresh_session() as other:
        active = [v.version for v in other.exec(select(AdapterVersion)).all() if v.status == AdapterStatus.active]
        events = [(e.action, e.target) for e in other.exec(select(AuditEvent)).all()]
    return active, events


def test_a_promotion_and_its_audit_event_are_stored_by_one_commit(session, fresh_session):
    seed(session)
    adapter_repo.mark_active(session=session, version="v0002", commit=False)
    event = audit_repo.add_audit(session=session, entry=PROMOTE)
    assert event.id is not None  # flushed: a bad row would have failed here, before the commit

    assert stored_state(fresh_session) == (["v0001"], [])  # staged, not stored
    session.commit()
    assert stored_state(fresh_session) == (["v0002"], [("promote", "v0002")])


def test_a_failing_audit_insert_leaves_the_active_version_unchanged(session, fresh_session):
    seed(session)
    adapter_repo.mark_active(session=session, version="v0002", commit=False)
    unstorable = AuditEntry(actor="U_ADMIN", source="api", action="promote", detail={"swap": object()})
    # SQLAlchemy wraps the encoder's TypeError on SQLite; psycopg's JSON adapter raises it as it is.
    with pytest.raises((StatementError, TypeError)):
        audit_repo.add_audit(session=session, entry=unstorable)
    session.rollback()

    assert stored_state(fresh_session) == (["v0001"], [])
    assert stored_version(session, "v0001").status == AdapterStatus.active


def test_an_action_that_fails_after_staging_its_audit_event_stores_neither(session, fresh_session):
    seed(session)
    with pytest.raises(LookupError):
        audit_repo.add_audit(session=session, entry=PROMOTE)
        adapter_repo.mark_active(session=session, version="v0404", commit=False)
    session.rollback()
    assert stored_state(fresh_session) == (["v0001"], [])


def test_a_rejection_and_its_audit_event_commit_together(session, fresh_session):
    seed(session)
    adapter_repo.set_version_status(session=session, version="v0002", status=AdapterStatus.rejected, commit=False)
    audit_repo.add_audit(
        session=session, entry=AuditEntry(actor="tuneloop", source="cycle", action="reject", target="v0002")
    )
    with fresh_session() as other:
        assert stored_version(other, "v0002").status == AdapterStatus.ready
    session.commit()
    with fresh_session() as other:
        assert stored_version(other, "v0002").status == AdapterStatus.rejected
        [event] = audit_repo.list_audit(session=other)
        assert (event.actor, event.action, event.target) == ("tuneloop", "reject", "v0002")


def test_committing_defaults_are_unchanged(session, fresh_session):
    seed(session)
    adapter_repo.mark_active(session=session, version=BASE_VERSION)
    audit_repo.record_audit(session=session, actor="U1", source="cli", action="rollback", target="x" * 300)
    session.close()  # nothing staged is left: both calls committed on their own
    with fresh_session() as other:
        assert stored_version(other, BASE_VERSION).status == AdapterStatus.active
        [event] = audit_repo.list_audit(session=other)
        assert event.target == "x" * 128  # bounded whatever the caller checked
