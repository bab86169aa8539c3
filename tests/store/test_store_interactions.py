"""store.interactions on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from store import interactions as repo
from store.models import Interaction, InteractionStatus


def _assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0)


def _ask(session, **overrides) -> Interaction:
    fields = {"user_id": "U1", "source": "slack", "question": "How do I deploy?"}
    fields.update(overrides)
    return repo.create_interaction(session=session, **fields)


def test_create_interaction_persists_every_field(session, fresh_session):
    context = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    before = datetime.now(UTC)
    created = repo.create_interaction(
        session=session,
        user_id="U42",
        source="slack",
        question="What is the VPN address?",
        context=context,
        channel="C1",
        thread_ts="100.1",
        message_ts="100.2",
    )
    after = datetime.now(UTC)

    assert isinstance(created.id, int)
    with fresh_session() as other:
        stored = other.get(Interaction, created.id)
        assert stored is not None
        assert stored.user_id == "U42"
        assert stored.source == "slack"
        assert stored.question == "What is the VPN address?"
        assert stored.context == context
        assert (stored.channel, stored.thread_ts, stored.message_ts) == ("C1", "100.1", "100.2")
        assert stored.status == InteractionStatus.pending
        assert stored.answer is None
        assert stored.adapter_version is None
        assert stored.latency_ms is None
        assert stored.error is None
        _assert_utc(stored.created_at)
        assert before - timedelta(seconds=1) <= stored.created_at <= after + timedelta(seconds=1)


def test_create_interaction_defaults(session, fresh_session):
    created = _ask(session)
    with fresh_session() as other:
        stored = other.get(Interaction, created.id)
        assert stored is not None
        assert stored.context == []
        assert stored.channel is None
        assert stored.thread_ts is None
        assert stored.message_ts is None


def test_created_ids_are_distinct_and_increasing(session):
    ids = [_ask(session, question=f"q{i}").id for i in range(3)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3


def test_record_answer(session, fresh_session):
    created = _ask(session)
    answered = repo.record_answer(
        session=session,
        interaction_id=created.id,
        answer="Use the script.",
        adapter_version="v0003",
        latency_ms=1234,
    )
    assert answered.id == created.id
    assert answered.status == InteractionStatus.answered

    with fresh_session() as other:
        stored = other.get(Interaction, created.id)
        assert stored is not None
        assert stored.status == InteractionStatus.answered
        assert stored.answer == "Use the script."
        assert stored.adapter_version == "v0003"
        assert stored.latency_ms == 1234
        assert stored.error is None


def test_record_failure(session, fresh_session):
    created = _ask(session)
    failed = repo.record_failure(session=session, interaction_id=created.id, error="timeout", latency_ms=30000)
    assert failed.status == InteractionStatus.failed

    with fresh_session() as other:
        stored = other.get(Interaction, created.id)
        assert stored is not None
        assert stored.status == InteractionStatus.failed
        assert stored.error == "timeout"
        assert stored.latency_ms == 30000
        assert stored.answer is None


def test_answer_after_failure_clears_the_error(session, fresh_session):
    created = _ask(session)
    repo.record_failure(session=session, interaction_id=created.id, error="boom", latency_ms=5)
    repo.record_answer(session=session, interaction_id=created.id, answer="ok", adapter_version="base", latency_ms=7)
    with fresh_session() as other:
        stored = other.get(Interaction, created.id)
        assert stored is not None
        assert stored.status == InteractionStatus.answered
        assert stored.error is None
        assert stored.latency_ms == 7


@pytest.mark.parametrize(
    "call",
    [
        lambda s: repo.record_answer(session=s, interaction_id=999, answer="a", adapter_version="base", latency_ms=1),
        lambda s: repo.record_failure(session=s, interaction_id=999, error="e", latency_ms=1),
        lambda s: repo.set_message_ts(session=s, interaction_id=999, message_ts="1.0"),
    ],
    ids=["record_answer", "record_failure", "set_message_ts"],
)
def test_updates_of_unknown_interaction_raise_lookup_error(session, call):
    with pytest.raises(LookupError, match="999"):
        call(session)


def test_get_interaction(session):
    created = _ask(session)
    got = repo.get_interaction(session=session, interaction_id=created.id)
    assert got is not None
    assert got.id == created.id
    assert repo.get_interaction(session=session, interaction_id=created.id + 1000) is None


def test_find_by_message(session):
    first = _ask(session, channel="C1", message_ts="111.1")
    second = _ask(session, channel="C2", message_ts="111.1")
    _ask(session, channel="C1", message_ts="222.2")

    found = repo.find_by_message(session=session, channel="C1", message_ts="111.1")
    assert found is not None and found.id == first.id
    found = repo.find_by_message(session=session, channel="C2", message_ts="111.1")
    assert found is not None and found.id == second.id
    assert repo.find_by_message(session=session, channel="C3", message_ts="111.1") is None
    assert repo.find_by_message(session=session, channel="C1", message_ts="333.3") is None


def test_set_message_ts_makes_the_interaction_findable(session):
    created = _ask(session, channel="C9")
    assert repo.find_by_message(session=session, channel="C9", message_ts="555.5") is None
    repo.set_message_ts(session=session, interaction_id=created.id, message_ts="555.5")
    found = repo.find_by_message(session=session, channel="C9", message_ts="555.5")
    assert found is not None and found.id == created.id


def test_list_interactions_newest_first_with_limit(session):
    assert repo.list_interactions(session=session) == []
    ids = [_ask(session, question=f"q{i}").id for i in range(5)]

    listed = repo.list_interactions(session=session)
    assert [i.id for i in listed] == list(reversed(ids))
    limited = repo.list_interactions(session=session, limit=2)
    assert [i.id for i in limited] == [ids[4], ids[3]]


def test_list_answered_only_answered_oldest_first(session):
    a = _ask(session, question="a")
    b = _ask(session, question="b")
    c = _ask(session, question="c")
    _ask(session, question="still pending")
    repo.record_answer(session=session, interaction_id=c.id, answer="C", adapter_version="base", latency_ms=1)
    repo.record_failure(session=session, interaction_id=b.id, error="x", latency_ms=1)
    repo.record_answer(session=session, interaction_id=a.id, answer="A", adapter_version="base", latency_ms=1)

    answered = repo.list_answered(session=session)
    assert [i.id for i in answered] == [a.id, c.id]
    assert all(i.status == InteractionStatus.answered for i in answered)
