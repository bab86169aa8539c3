"""Votes and corrections: one vote per user per interaction; corrections pass a review."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from store.models import Correction, CorrectionStatus, Feedback, Interaction, utcnow
from store.pages import Page, newest_first


def record_vote(*, session: Session, interaction_id: int, user_id: str, vote: int) -> Feedback:
    """Record +1/-1; a later vote by the same user replaces the earlier one."""
    if vote not in (1, -1):
        raise ValueError("vote must be +1 or -1")
    if session.get(Interaction, interaction_id) is None:
        raise LookupError(f"interaction {interaction_id} does not exist")
    for _attempt in range(2):
        existing = session.exec(
            select(Feedback).where(Feedback.interaction_id == interaction_id, Feedback.user_id == user_id)
        ).first()
        if existing is not None:
            existing.vote = vote
            existing.updated_at = utcnow()
            session.add(existing)
            session.commit()
            session.refresh(existing)
            return existing
        created = Feedback(interaction_id=interaction_id, user_id=user_id, vote=vote)
        session.add(created)
        try:
            session.commit()
        except IntegrityError:
            # A concurrent first vote by the same user won the insert: replace it instead.
            session.rollback()
            continue
        session.refresh(created)
        return created
    raise RuntimeError("could not record the vote")


def vote_totals(*, session: Session, interaction_ids: list[int] | None = None) -> dict[int, tuple[int, int]]:
    """interaction id -> (up votes, down votes): of every interaction, or only of `interaction_ids`."""
    statement = select(Feedback.interaction_id, Feedback.vote, func.count()).group_by(
        col(Feedback.interaction_id), col(Feedback.vote)
    )
    if interaction_ids is not None:
        statement = statement.where(col(Feedback.interaction_id).in_(interaction_ids))
    return _tally(session.exec(statement).all())


def vote_totals_by_version(*, session: Session) -> dict[str | None, tuple[int, int]]:
    """adapter version that answered -> (up votes, down votes)."""
    statement = (
        select(Interaction.adapter_version, Feedback.vote, func.count())
        .join(Interaction, col(Interaction.id) == col(Feedback.interaction_id))
        .group_by(col(Interaction.adapter_version), col(Feedback.vote))
    )
    return _tally(session.exec(statement).all())


K = TypeVar("K")


def _tally(rows: Sequence[tuple[K, int, int]]) -> dict[K, tuple[int, int]]:
    totals: dict[K, tuple[int, int]] = {}
    for key, vote, count in rows:
        ups, downs = totals.get(key, (0, 0))
        totals[key] = (ups + count, downs) if vote > 0 else (ups, downs + count)
    return totals


# Runs in the approval's transaction, before its commit: what an approval brings about is committed with it.
OnApproved = Callable[[Session, Correction], None]


def create_correction(
    *,
    session: Session,
    interaction_id: int,
    author_id: str,
    text: str,
    approved: bool,
    on_approved: OnApproved | None = None,
) -> Correction:
    if session.get(Interaction, interaction_id) is None:
        raise LookupError(f"interaction {interaction_id} does not exist")
    correction = Correction(interaction_id=interaction_id, author_id=author_id, text=text)
    if approved:
        correction.status = CorrectionStatus.approved
        correction.reviewer_id = author_id
        correction.reviewed_at = utcnow()
    session.add(correction)
    if approved and on_approved is not None:
        session.flush()
        on_approved(session, correction)
    session.commit()
    session.refresh(correction)
    return correction


def review_correction(
    *,
    session: Session,
    correction_id: int,
    reviewer_id: str,
    approve: bool,
    on_approved: OnApproved | None = None,
    text: str | None = None,
) -> Correction:
    """Approve or reject a pending correction; `text` (approvals only) replaces its text first: an edit."""
    correction = session.get(Correction, correction_id)
    if correction is None:
        raise LookupError(f"correction {correction_id} does not exist")
    if correction.status != CorrectionStatus.pending:
        raise ValueError(f"correction {correction_id} is already {correction.status}")
    if text is not None:
        if not approve:
            raise ValueError("only an approval may change a correction's text")
        correction.text = text
    correction.status = CorrectionStatus.approved if approve else CorrectionStatus.rejected
    correction.reviewer_id = reviewer_id
    correction.reviewed_at = utcnow()
    session.add(correction)
    if approve and on_approved is not None:
        session.flush()
        on_approved(session, correction)
    session.commit()
    session.refresh(correction)
    return correction


def corrections_of(*, session: Session, interaction_ids: list[int]) -> dict[int, list[Correction]]:
    """interaction id -> its corrections, oldest first (only interactions that have some)."""
    if not interaction_ids:
        return {}
    statement = (
        select(Correction).where(col(Correction.interaction_id).in_(interaction_ids)).order_by(col(Correction.id))
    )
    found: dict[int, list[Correction]] = {}
    for row in session.exec(statement).all():
        found.setdefault(row.interaction_id, []).append(row)
    return found


def get_correction(*, session: Session, correction_id: int) -> Correction | None:
    return session.get(Correction, correction_id)


def list_corrections(*, session: Session, status: str | None = None) -> list[Correction]:
    statement = select(Correction).order_by(col(Correction.id))
    if status is not None:
        statement = statement.where(Correction.status == status)
    return list(session.exec(statement).all())


def page_corrections(
    *,
    session: Session,
    limit: int,
    before: int | None = None,
    status: str | None = None,
    interaction_id: int | None = None,
) -> Page[Correction]:
    statement = select(Correction)
    if status is not None:
        statement = statement.where(Correction.status == status)
    if interaction_id is not None:
        statement = statement.where(Correction.interaction_id == interaction_id)
    return newest_first(session=session, statement=statement, id_column=Correction.id, limit=limit, before=before)


def count_corrections(*, session: Session, status: str) -> int:
    statement = select(func.count()).select_from(Correction).where(Correction.status == status)
    return int(session.exec(statement).one())


def votes_of(*, session: Session, interaction_id: int) -> list[Feedback]:
    statement = select(Feedback).where(Feedback.interaction_id == interaction_id).order_by(col(Feedback.id))
    return list(session.exec(statement).all())


def count_new_feedback(*, session: Session, since: datetime | None) -> int:
    """Approved corrections and votes newer than `since` (everything when None)."""
    corrections = select(func.count()).select_from(Correction).where(Correction.status == CorrectionStatus.approved)
    votes = select(func.count()).select_from(Feedback)
    if since is not None:
        corrections = corrections.where(col(Correction.reviewed_at) > since)
        votes = votes.where(col(Feedback.updated_at) > since)
    return int(session.exec(corrections).one()) + int(session.exec(votes).one())
