"""The memory of reviewed answers: entries (an approved answer) and the wordings of their question."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from store.models import Interaction, MemoryEntry, MemoryStatus, MemoryWording, WordingSource, utcnow
from store.pages import Page, newest_first


@dataclass(frozen=True, kw_only=True)
class StoredWording:
    entry_id: int
    text: str
    embedding: bytes
    asked: bool = True  # False: a paraphrase the base model wrote


def latest_change(*, session: Session) -> datetime | None:
    """The newest change stamp of any entry (an index lookup): a process compares it with what it loaded."""
    stamp: datetime | None = session.exec(select(func.max(MemoryEntry.updated_at))).one()
    return stamp


def _next_stamp(session: Session) -> datetime:
    # Stamps only move forward, even when this host's clock is behind the host that wrote the last change:
    # a process that loaded up to stamp S reloads everything stamped S or later, so nothing is skipped.
    now = utcnow()
    latest = latest_change(session=session)
    if latest is not None:
        latest = latest if latest.tzinfo else latest.replace(tzinfo=now.tzinfo)
        if latest >= now:
            return latest + timedelta(microseconds=1)
    return now


def changed_since(*, session: Session, stamp: datetime | None) -> tuple[list[MemoryEntry], list[StoredWording]]:
    """Entries stamped at or after `stamp` (all when None), and the wordings of those still active."""
    statement = select(MemoryEntry)
    if stamp is not None:
        statement = statement.where(col(MemoryEntry.updated_at) >= stamp)
    entries = list(session.exec(statement).all())
    active_ids = [entry.id for entry in entries if entry.status == MemoryStatus.active and entry.id is not None]
    wordings: list[StoredWording] = []
    # Chunks keep the IN list within every backend's parameter limit.
    for start in range(0, len(active_ids), 500):
        chunk = active_ids[start : start + 500]
        rows = session.exec(
            select(MemoryWording.entry_id, MemoryWording.text, MemoryWording.embedding, MemoryWording.source).where(
                col(MemoryWording.entry_id).in_(chunk)
            )
        ).all()
        wordings.extend(
            StoredWording(entry_id=e, text=t, embedding=b, asked=s == WordingSource.asked) for e, t, b, s in rows
        )
    return entries, wordings


@dataclass(frozen=True, kw_only=True)
class Approval:
    """An approved answer to one wording of a question, with the wording's embedding."""

    answer: str
    approved_by: str
    correction_id: int | None
    wording: str
    embedding: bytes
    interaction_id: int | None


def remember(*, session: Session, entry: MemoryEntry | None, approval: Approval) -> tuple[MemoryEntry, bool]:
    """A new entry, or (`entry` given: the same question group) a later approval that replaces its answer.

    The wording is kept unless the entry has it already; a retired entry approved again is active again.
    Returns the entry and whether the approval's wording was new to it (then it is worth paraphrasing)."""
    stamp = _next_stamp(session)
    if entry is None:
        entry = MemoryEntry(answer=approval.answer, approved_by=approval.approved_by, created_at=stamp)
    entry.answer = approval.answer
    entry.approved_by = approval.approved_by
    entry.correction_id = approval.correction_id
    entry.approved_at = stamp
    entry.updated_at = stamp
    entry.updated_by = approval.approved_by
    entry.status = MemoryStatus.active
    entry.retired_at = None
    session.add(entry)
    session.flush()
    assert entry.id is not None
    known = _known_wording(session, entry_id=entry.id, text=approval.wording)
    if known is None or known.source != WordingSource.asked:
        # A wording the base model wrote and someone then asked is an asked wording now (it keeps its embedding).
        if known is not None:
            session.delete(known)
        session.add(
            MemoryWording(
                entry_id=entry.id,
                interaction_id=approval.interaction_id,
                text=approval.wording,
                embedding=approval.embedding,
            )
        )
        _drop_paraphrases_elsewhere(session, entry=entry, text=approval.wording, stamp=stamp)
    return entry, known is None


def _drop_paraphrases_elsewhere(session: Session, *, entry: MemoryEntry, text: str, stamp: datetime) -> None:
    """A question a reviewer corrected belongs to its own entry: another entry's paraphrase of the same words
    (a rewording that drifted to another question) goes, and that entry's stamp moves so every process drops it."""
    statement = select(MemoryWording).where(
        MemoryWording.text == text, MemoryWording.source == WordingSource.paraphrase, MemoryWording.entry_id != entry.id
    )
    for wording in session.exec(statement).all():
        other = session.get(MemoryEntry, wording.entry_id)
        session.delete(wording)
        if other is not None:
            other.updated_at = stamp
            session.add(other)


def _known_wording(session: Session, *, entry_id: int, text: str) -> MemoryWording | None:
    statement = select(MemoryWording).where(MemoryWording.entry_id == entry_id, MemoryWording.text == text)
    return session.exec(statement).first()


@dataclass(frozen=True, kw_only=True)
class NewWording:
    text: str
    embedding: bytes


def add_paraphrases(*, session: Session, entry_id: int, wordings: list[NewWording]) -> int:
    """Store model-written wordings of an entry's question (those it lacks); returns how many were added.

    The entry's change stamp moves forward, so every process loads them; its answer and approval stay as they are.
    """
    entry = session.get(MemoryEntry, entry_id)
    if entry is None:
        return 0
    have = set(session.exec(select(MemoryWording.text).where(MemoryWording.entry_id == entry_id)).all())
    added = 0
    for wording in wordings:
        if wording.text in have:
            continue
        have.add(wording.text)
        session.add(
            MemoryWording(
                entry_id=entry_id, text=wording.text, embedding=wording.embedding, source=WordingSource.paraphrase
            )
        )
        added += 1
    if added:
        entry.updated_at = _next_stamp(session)
        session.add(entry)
    return added


def paraphrases_of(*, session: Session, entry_ids: list[int]) -> dict[int, list[str]]:
    """entry id -> its model-written wordings, oldest first (entries without any are absent)."""
    found: dict[int, list[str]] = {}
    for start in range(0, len(entry_ids), 500):
        chunk = entry_ids[start : start + 500]
        statement = (
            select(MemoryWording.entry_id, MemoryWording.text)
            .where(col(MemoryWording.entry_id).in_(chunk), MemoryWording.source == WordingSource.paraphrase)
            .order_by(col(MemoryWording.id))
        )
        for entry_id, text in session.exec(statement).all():
            found.setdefault(entry_id, []).append(text)
    return found


def entries_without_paraphrases(*, session: Session) -> list[tuple[int, str]]:
    """(entry id, first asked wording) of active entries that have no model-written wording yet."""
    paraphrased = select(MemoryWording.entry_id).where(MemoryWording.source == WordingSource.paraphrase)
    firsts = (
        select(func.min(MemoryWording.id))
        .join(MemoryEntry, col(MemoryEntry.id) == col(MemoryWording.entry_id))
        .where(
            MemoryEntry.status == MemoryStatus.active,
            MemoryWording.source == WordingSource.asked,
            col(MemoryWording.entry_id).not_in(paraphrased),
        )
        .group_by(col(MemoryWording.entry_id))
    )
    statement = (
        select(MemoryWording.entry_id, MemoryWording.text)
        .where(col(MemoryWording.id).in_(firsts))
        .order_by(col(MemoryWording.entry_id))
    )
    return [(entry_id, text) for entry_id, text in session.exec(statement).all()]


def edit_answer(*, session: Session, entry: MemoryEntry, answer: str, editor: str) -> MemoryEntry:
    """A reviewer rewrites the answer in place: the editor becomes the one who approved it."""
    stamp = _next_stamp(session)
    entry.answer = answer
    entry.approved_by = editor
    entry.approved_at = stamp
    entry.updated_at = stamp
    entry.updated_by = editor
    session.add(entry)
    return entry


def retire(*, session: Session, entry: MemoryEntry, by: str) -> MemoryEntry:
    stamp = _next_stamp(session)
    entry.status = MemoryStatus.retired
    entry.retired_at = stamp
    entry.updated_at = stamp
    entry.updated_by = by
    session.add(entry)
    return entry


def get_entry(*, session: Session, entry_id: int, for_update: bool = False) -> MemoryEntry | None:
    """The entry; `for_update` locks its row until the commit (PostgreSQL; SQLite has one writer anyway)."""
    return session.get(MemoryEntry, entry_id, with_for_update=for_update)


def wordings_of(*, session: Session, entry_id: int, source: WordingSource | None = WordingSource.asked) -> list[str]:
    """The wordings of an entry's question, oldest first: those asked (default), the paraphrases, or all (None)."""
    statement = select(MemoryWording.text).where(MemoryWording.entry_id == entry_id).order_by(col(MemoryWording.id))
    if source is not None:
        statement = statement.where(MemoryWording.source == source)
    return list(session.exec(statement).all())


def entry_of_interaction(*, session: Session, interaction_id: int) -> MemoryEntry | None:
    """The entry an earlier correction of this very interaction created, if any."""
    statement = (
        select(MemoryEntry)
        .join(MemoryWording, col(MemoryWording.entry_id) == col(MemoryEntry.id))
        .where(MemoryWording.interaction_id == interaction_id)
    )
    return session.exec(statement).first()


def page_entries(
    *, session: Session, limit: int, before: int | None = None, status: str | None = None
) -> Page[MemoryEntry]:
    statement = select(MemoryEntry)
    if status is not None:
        statement = statement.where(MemoryEntry.status == status)
    return newest_first(session=session, statement=statement, id_column=MemoryEntry.id, limit=limit, before=before)


def count_entries(*, session: Session) -> dict[str, int]:
    """status -> number of entries, for every status (0 where none)."""
    statement = select(MemoryEntry.status, func.count()).group_by(col(MemoryEntry.status))
    counts = {str(status): 0 for status in MemoryStatus}
    counts.update({status: int(count) for status, count in session.exec(statement).all()})
    return counts


def interactions_using(*, session: Session, entry_id: int) -> int:
    statement = select(func.count()).select_from(Interaction).where(Interaction.memory_entry_id == entry_id)
    return int(session.exec(statement).one())


def entries_by_interaction(*, session: Session) -> dict[int, MemoryEntry]:
    """interaction id -> the entry its corrected question belongs to (retired entries included)."""
    statement = select(MemoryWording.interaction_id, MemoryEntry).join(
        MemoryEntry, col(MemoryEntry.id) == col(MemoryWording.entry_id)
    )
    return {interaction_id: entry for interaction_id, entry in session.exec(statement).all() if interaction_id}


def first_wordings(*, session: Session, entry_ids: list[int]) -> dict[int, str]:
    """The first wording of each entry's question (the one its first approval came with), for listings."""
    firsts = (
        select(func.min(MemoryWording.id))
        .where(col(MemoryWording.entry_id).in_(entry_ids))
        .group_by(col(MemoryWording.entry_id))
    )
    statement = select(MemoryWording.entry_id, MemoryWording.text).where(col(MemoryWording.id).in_(firsts))
    return {entry_id: text for entry_id, text in session.exec(statement).all()}


def entries_by_id(*, session: Session, entry_ids: list[int]) -> dict[int, MemoryEntry]:
    statement = select(MemoryEntry).where(col(MemoryEntry.id).in_(entry_ids))
    return {entry.id: entry for entry in session.exec(statement).all() if entry.id is not None}
