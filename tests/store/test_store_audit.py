"""store.audit on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from store import audit as repo
from store.models import AuditEvent


def test_record_audit_persists_every_field(session, fresh_session):
    event = repo.record_audit(
        session=session,
        actor="U1",
        source="slack",
        action="rollback",
        target="v0003",
        outcome="refused",
        detail={"reason": "not an admin", "roles": ["user"]},
    )
    assert event.id is not None
    with fresh_session() as other:
        stored = other.get(AuditEvent, event.id)
        assert stored is not None
        assert (stored.actor, stored.source, stored.action, stored.target, stored.outcome) == (
            "U1",
            "slack",
            "rollback",
            "v0003",
            "refused",
        )
        assert stored.detail == {"reason": "not an admin", "roles": ["user"]}
        assert stored.created_at.tzinfo is not None
        assert stored.created_at.utcoffset() == timedelta(0)


def test_record_audit_defaults(session, fresh_session):
    event = repo.record_audit(session=session, actor="admin", source="cli", action="train")
    with fresh_session() as other:
        stored = other.get(AuditEvent, event.id)
        assert stored is not None
        assert stored.target is None
        assert stored.outcome == "ok"
        assert stored.detail == {}


def test_list_audit_newest_first_with_limit(session):
    assert repo.list_audit(session=session) == []
    ids = [repo.record_audit(session=session, actor="a", source="api", action=f"action{i}").id for i in range(5)]
    listed = repo.list_audit(session=session)
    assert [e.id for e in listed] == list(reversed(ids))
    assert [e.action for e in listed] == [f"action{i}" for i in reversed(range(5))]
    assert [e.id for e in repo.list_audit(session=session, limit=3)] == [ids[4], ids[3], ids[2]]
