"""Interactions: a question, its thread context, and the answer with the adapter that gave it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlmodel import Session, col, func, select

from store.models import Interaction, InteractionStatus
from store.pages import Page, newest_first


def create_interaction(
    *,
    session: Session,
    user_id: str,
    source: str,
    question: str,
    context: list[dict[str, Any]] | None = None,
    channel: str | None = None,
    thread_ts: str | None = None,
    message_ts: str | None = None,
) -> Interaction:
    interaction = Interaction(
        user_id=user_id,
        source=source,
        question=question,
        context=context or [],
        channel=channel,
        thread_ts=thread_ts,
        message_ts=message_ts,
    )
    session.add(interaction)
    session.commit()
    session.refresh(interaction)
    return interaction


def record_answer(
    *,
    session: Session,
    interaction_id: int,
    answer: str,
    adapter_version: str,
    latency_ms: int,
    memory_entry_id: int | None = None,
    memory_mode: str | None = None,
) -> Interaction:
    interaction = _get_or_raise(session, interaction_id)
    interaction.answer = answer
    interaction.memory_entry_id = memory_entry_id
    interaction.memory_mode = memory_mode
    interaction.adapter_version = adapter_version
    interaction.latency_ms = latency_ms
    interaction.status = InteractionStatus.answered
    interaction.error = None
    session.add(interaction)
    session.commit()
    session.refresh(interaction)
    return interaction


def record_failure(*, session: Session, interaction_id: int, error: str, latency_ms: int) -> Interaction:
    interaction = _get_or_raise(session, interaction_id)
    interaction.status = InteractionStatus.failed
    interaction.error = error
    interaction.latency_ms = latency_ms
    session.add(interaction)
    session.commit()
    session.refresh(interaction)
    return interaction


def set_message_ts(*, session: Session, interaction_id: int, message_ts: str) -> None:
    interaction = _get_or_raise(session, interaction_id)
    interaction.message_ts = message_ts
    session.add(interaction)
    session.commit()


def get_interaction(*, session: Session, interaction_id: int) -> Interaction | None:
    return session.get(Interaction, interaction_id)


def find_by_message(*, session: Session, channel: str, message_ts: str) -> Interaction | None:
    statement = select(Interaction).where(Interaction.channel == channel, Interaction.message_ts == message_ts)
    return session.exec(statement).first()


def list_interactions(*, session: Session, limit: int = 50) -> list[Interaction]:
    statement = select(Interaction).order_by(col(Interaction.id).desc()).limit(limit)
    return list(session.exec(statement).all())


def page_interactions(
    *,
    session: Session,
    limit: int,
    before: int | None = None,
    user_id: str | None = None,
    contains: str | None = None,
) -> Page[Interaction]:
    """Newest first; `contains`: only questions or answers holding that text (case-insensitive; on SQLite for ASCII)."""
    statement = select(Interaction)
    if user_id is not None:
        statement = statement.where(Interaction.user_id == user_id)
    if contains:
        pattern = "%" + contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # SQLite's LIKE already ignores case (ASCII letters), and is about twice as fast as ILIKE's lower() on
        # both sides; PostgreSQL's LIKE does not, so it gets ILIKE.
        sqlite = session.get_bind().dialect.name == "sqlite"
        question, answer = col(Interaction.question), col(Interaction.answer)
        statement = statement.where(
            question.like(pattern, escape="\\") | answer.like(pattern, escape="\\")
            if sqlite
            else question.ilike(pattern, escape="\\") | answer.ilike(pattern, escape="\\")
        )
    return newest_first(session=session, statement=statement, id_column=Interaction.id, limit=limit, before=before)


def interactions_by_id(*, session: Session, interaction_ids: list[int]) -> dict[int, Interaction]:
    if not interaction_ids:
        return {}
    rows = session.exec(select(Interaction).where(col(Interaction.id).in_(interaction_ids))).all()
    return {row.id: row for row in rows if row.id is not None}


def answers_per_day(*, session: Session, since: datetime) -> list[tuple[date, int]]:
    """Answered interactions per UTC day from `since` on, oldest day first (a range of the created_at index)."""
    day = func.date(Interaction.created_at)
    statement = (
        select(day, func.count())
        .where(col(Interaction.created_at) >= since, Interaction.status == InteractionStatus.answered)
        .group_by(day)
        .order_by(day)
    )
    return [(_as_date(value), int(count)) for value, count in session.exec(statement).all()]


def _as_date(value: Any) -> date:
    # SQLite answers date() with text, PostgreSQL with a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def list_answered(*, session: Session) -> list[Interaction]:
    statement = (
        select(Interaction).where(Interaction.status == InteractionStatus.answered).order_by(col(Interaction.id))
    )
    return list(session.exec(statement).all())


def _get_or_raise(session: Session, interaction_id: int) -> Interaction:
    interaction = session.get(Interaction, interaction_id)
    if interaction is None:
        raise LookupError(f"interaction {interaction_id} does not exist")
    return interaction
