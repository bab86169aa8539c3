"""store.feedback (votes, corrections, new-feedback counting) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from store import feedback as repo
from store.interactions import create_interaction
from store.models import Correction, CorrectionStatus, Feedback


def _assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0)


def _interaction_id(session, question: str = "q") -> int:
    interaction = create_interaction(session=session, user_id="asker", source="slack", question=question)
    assert interaction.id is not None
    return interaction.id


def _feedback_rows(session) -> int:
    return int(session.exec(select(func.count()).select_from(Feedback)).one())


# --- votes -------------------------------------------------------------------------------------------


def test_record_vote_creates_a_row(session, fresh_session):
    iid = _interaction_id(session)
    vote = repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=1)
    assert vote.id is not None
    with fresh_session() as other:
        stored = other.get(Feedback, vote.id)
        assert stored is not None
        assert (stored.interaction_id, stored.user_id, stored.vote) == (iid, "U1", 1)
        _assert_utc(stored.created_at)
        _assert_utc(stored.updated_at)


def test_a_later_vote_replaces_the_earlier_one(session, fresh_session):
    iid = _interaction_id(session)
    first = repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=1)
    # Backdate the first vote, so that the replacement's new updated_at is observable without waiting.
    old = datetime(2020, 1, 1, tzinfo=UTC)
    first.created_at = old
    first.updated_at = old
    session.add(first)
    session.commit()

    second = repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=-1)

    assert second.id == first.id
    assert _feedback_rows(session) == 1
    with fresh_session() as other:
        stored = other.get(Feedback, first.id)
        assert stored is not None
        assert stored.vote == -1
        assert stored.created_at == old
        assert stored.updated_at > old
        _assert_utc(stored.updated_at)


def test_same_vote_twice_keeps_one_row(session):
    iid = _interaction_id(session)
    repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=-1)
    repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=-1)
    assert _feedback_rows(session) == 1
    assert repo.vote_totals(session=session) == {iid: (0, 1)}


def test_votes_are_per_user_and_per_interaction(session):
    a = _interaction_id(session, "a")
    b = _interaction_id(session, "b")
    repo.record_vote(session=session, interaction_id=a, user_id="U1", vote=1)
    repo.record_vote(session=session, interaction_id=a, user_id="U2", vote=1)
    repo.record_vote(session=session, interaction_id=b, user_id="U1", vote=-1)
    assert _feedback_rows(session) == 3


def test_vote_totals(session):
    assert repo.vote_totals(session=session) == {}
    a = _interaction_id(session, "a")
    b = _interaction_id(session, "b")
    c = _interaction_id(session, "c")  # never voted on
    repo.record_vote(session=session, interaction_id=a, user_id="U1", vote=1)
    repo.record_vote(session=session, interaction_id=a, user_id="U2", vote=1)
    repo.record_vote(session=session, interaction_id=a, user_id="U3", vote=-1)
    repo.record_vote(session=session, interaction_id=b, user_id="U1", vote=-1)
    repo.record_vote(session=session, interaction_id=b, user_id="U2", vote=1)
    repo.record_vote(session=session, interaction_id=b, user_id="U2", vote=-1)  # U2 changes their mind

    totals = repo.vote_totals(session=session)
    assert totals == {a: (2, 1), b: (0, 2)}
    assert c not in totals


@pytest.mark.parametrize("value", [0, 2, -2, 10])
def test_invalid_vote_value_raises_value_error(session, value):
    iid = _interaction_id(session)
    with pytest.raises(ValueError):
        repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=value)
    assert _feedback_rows(session) == 0


def test_invalid_vote_does_not_replace_a_valid_one(session):
    iid = _interaction_id(session)
    repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=1)
    with pytest.raises(ValueError):
        repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=0)
    assert repo.vote_totals(session=session) == {iid: (1, 0)}


def test_vote_on_unknown_interaction_raises_lookup_error(session):
    with pytest.raises(LookupError, match="12345"):
        repo.record_vote(session=session, interaction_id=12345, user_id="U1", vote=1)
    assert _feedback_rows(session) == 0


def test_database_enforces_one_vote_per_user_per_interaction(session):
    """The migrated schema itself holds the uniqueness, not only the repository code."""
    iid = _interaction_id(session)
    session.add(Feedback(interaction_id=iid, user_id="U1", vote=1))
    session.commit()
    session.add(Feedback(interaction_id=iid, user_id="U1", vote=-1))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    assert _feedback_rows(session) == 1


def test_database_enforces_the_interaction_foreign_key(session):
    session.add(Feedback(interaction_id=424242, user_id="U1", vote=1))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


# --- corrections ---------------------------------------------------------------------------------------


def test_correction_by_reviewer_is_approved_at_once(session, fresh_session):
    iid = _interaction_id(session)
    before = datetime.now(UTC)
    correction = repo.create_correction(
        session=session, interaction_id=iid, author_id="admin", text="The right answer.", approved=True
    )
    with fresh_session() as other:
        stored = other.get(Correction, correction.id)
        assert stored is not None
        assert stored.status == CorrectionStatus.approved
        assert stored.reviewer_id == "admin"
        assert stored.author_id == "admin"
        assert stored.text == "The right answer."
        assert stored.interaction_id == iid
        _assert_utc(stored.reviewed_at)
        _assert_utc(stored.created_at)
        assert stored.reviewed_at >= before - timedelta(seconds=1)


def test_correction_by_user_is_pending(session, fresh_session):
    iid = _interaction_id(session)
    correction = repo.create_correction(
        session=session, interaction_id=iid, author_id="U1", text="Better answer", approved=False
    )
    with fresh_session() as other:
        stored = other.get(Correction, correction.id)
        assert stored is not None
        assert stored.status == CorrectionStatus.pending
        assert stored.reviewer_id is None
        assert stored.reviewed_at is None
        _assert_utc(stored.created_at)


def test_correction_on_unknown_interaction_raises_lookup_error(session):
    with pytest.raises(LookupError):
        repo.create_correction(session=session, interaction_id=777, author_id="U1", text="x", approved=False)
    assert repo.list_corrections(session=session) == []


@pytest.mark.parametrize(
    ("approve", "expected"), [(True, CorrectionStatus.approved), (False, CorrectionStatus.rejected)]
)
def test_review_sets_status_reviewer_and_time(session, fresh_session, approve, expected):
    iid = _interaction_id(session)
    pending = repo.create_correction(session=session, interaction_id=iid, author_id="U1", text="t", approved=False)
    before = datetime.now(UTC)
    reviewed = repo.review_correction(session=session, correction_id=pending.id, reviewer_id="admin", approve=approve)
    after = datetime.now(UTC)
    assert reviewed.status == expected

    with fresh_session() as other:
        stored = other.get(Correction, pending.id)
        assert stored is not None
        assert stored.status == expected
        assert stored.reviewer_id == "admin"
        assert stored.author_id == "U1"
        _assert_utc(stored.reviewed_at)
        assert before - timedelta(seconds=1) <= stored.reviewed_at <= after + timedelta(seconds=1)


@pytest.mark.parametrize("first_approve", [True, False])
@pytest.mark.parametrize("second_approve", [True, False])
def test_reviewing_twice_raises_and_keeps_the_first_review(session, fresh_session, first_approve, second_approve):
    iid = _interaction_id(session)
    pending = repo.create_correction(session=session, interaction_id=iid, author_id="U1", text="t", approved=False)
    first = repo.review_correction(session=session, correction_id=pending.id, reviewer_id="R1", approve=first_approve)
    with pytest.raises(ValueError):
        repo.review_correction(session=session, correction_id=pending.id, reviewer_id="R2", approve=second_approve)
    with fresh_session() as other:
        stored = other.get(Correction, pending.id)
        assert stored is not None
        assert stored.status == first.status
        assert stored.reviewer_id == "R1"
        assert stored.reviewed_at == first.reviewed_at


def test_reviewing_an_already_approved_correction_raises(session):
    iid = _interaction_id(session)
    approved = repo.create_correction(session=session, interaction_id=iid, author_id="admin", text="t", approved=True)
    with pytest.raises(ValueError):
        repo.review_correction(session=session, correction_id=approved.id, reviewer_id="R", approve=False)


def test_reviewing_unknown_correction_raises_lookup_error(session):
    with pytest.raises(LookupError):
        repo.review_correction(session=session, correction_id=31337, reviewer_id="R", approve=True)


def test_get_correction(session):
    iid = _interaction_id(session)
    created = repo.create_correction(session=session, interaction_id=iid, author_id="U1", text="t", approved=False)
    got = repo.get_correction(session=session, correction_id=created.id)
    assert got is not None and got.text == "t"
    assert repo.get_correction(session=session, correction_id=created.id + 100) is None


def test_list_corrections_by_status(session):
    assert repo.list_corrections(session=session) == []
    iid = _interaction_id(session)

    def make(text: str, approved: bool = False) -> int:
        c = repo.create_correction(session=session, interaction_id=iid, author_id="U", text=text, approved=approved)
        assert c.id is not None
        return c.id

    p1 = make("p1")
    a1 = make("a1", approved=True)
    r1 = make("r1")
    p2 = make("p2")
    a2 = make("a2")
    repo.review_correction(session=session, correction_id=r1, reviewer_id="R", approve=False)
    repo.review_correction(session=session, correction_id=a2, reviewer_id="R", approve=True)

    def ids(status: str | None) -> list[int]:
        return [c.id for c in repo.list_corrections(session=session, status=status)]

    assert ids(None) == [p1, a1, r1, p2, a2]
    assert ids(CorrectionStatus.pending) == [p1, p2]
    assert ids(CorrectionStatus.approved) == [a1, a2]
    assert ids(CorrectionStatus.rejected) == [r1]
    assert ids("pending") == [p1, p2]  # plain strings work as well as the enum


# --- count_new_feedback -----------------------------------------------------------------------------------

T_OLD = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
T_SINCE = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)
T_NEW = datetime(2024, 1, 3, 12, 0, tzinfo=UTC)


def _backdate_vote(session, vote: Feedback, when: datetime) -> None:
    vote.created_at = when
    vote.updated_at = when
    session.add(vote)
    session.commit()


def _backdate_review(session, correction: Correction, when: datetime) -> None:
    correction.reviewed_at = when
    session.add(correction)
    session.commit()


def _feedback_fixture(session) -> None:
    """2 old + 3 new votes; approved corrections: 1 old + 2 new; plus pending and rejected ones."""
    a = _interaction_id(session, "a")
    b = _interaction_id(session, "b")
    for user, when in [("o1", T_OLD), ("o2", T_OLD), ("n1", T_NEW), ("n2", T_NEW)]:
        _backdate_vote(session, repo.record_vote(session=session, interaction_id=a, user_id=user, vote=1), when)
    _backdate_vote(session, repo.record_vote(session=session, interaction_id=b, user_id="n3", vote=-1), T_NEW)

    for when in [T_OLD, T_NEW, T_NEW]:
        c = repo.create_correction(session=session, interaction_id=a, author_id="admin", text="t", approved=True)
        _backdate_review(session, c, when)
    rejected = repo.create_correction(session=session, interaction_id=b, author_id="U", text="t", approved=False)
    rejected = repo.review_correction(session=session, correction_id=rejected.id, reviewer_id="R", approve=False)
    _backdate_review(session, rejected, T_NEW)
    repo.create_correction(session=session, interaction_id=b, author_id="U", text="pending", approved=False)


def test_count_new_feedback_empty(session):
    assert repo.count_new_feedback(session=session, since=None) == 0
    assert repo.count_new_feedback(session=session, since=T_SINCE) == 0


def test_count_new_feedback_without_since_counts_all_votes_and_approved_corrections(session):
    _feedback_fixture(session)
    assert repo.count_new_feedback(session=session, since=None) == 5 + 3


def test_count_new_feedback_since_counts_only_newer(session):
    _feedback_fixture(session)
    assert repo.count_new_feedback(session=session, since=T_SINCE) == 3 + 2
    assert repo.count_new_feedback(session=session, since=T_OLD - timedelta(seconds=1)) == 5 + 3
    assert repo.count_new_feedback(session=session, since=T_NEW) == 0  # strictly newer


def test_count_new_feedback_since_in_another_timezone(session):
    """An aware `since` in another zone means the same instant."""
    _feedback_fixture(session)
    plus_five = timezone(timedelta(hours=5))
    # T_NEW - 1 h, written as a +05:00 local time: 2024-01-03 16:00+05:00 == 11:00Z.
    since = (T_NEW - timedelta(hours=1)).astimezone(plus_five)
    assert since.hour == 16
    assert repo.count_new_feedback(session=session, since=since) == 3 + 2
    # T_NEW + 1 h as +05:00 is 18:00 local: nothing is newer.
    assert repo.count_new_feedback(session=session, since=(T_NEW + timedelta(hours=1)).astimezone(plus_five)) == 0


def test_a_changed_vote_counts_as_new(session):
    iid = _interaction_id(session)
    vote = repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=1)
    _backdate_vote(session, vote, T_OLD)
    assert repo.count_new_feedback(session=session, since=T_SINCE) == 0
    repo.record_vote(session=session, interaction_id=iid, user_id="U1", vote=-1)  # updated_at = now
    assert repo.count_new_feedback(session=session, since=T_SINCE) == 1
