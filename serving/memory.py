"""The memory of reviewed answers: an approved correction changes answers at once, in every process.

Each process keeps the active wordings' embeddings in one matrix and, before each lookup, compares the store's
newest change stamp (an index lookup) with the one it loaded; what changed since is reloaded, so an approval,
an edit or a retirement made by any process on the same database counts from the next question on. The nightly
cycle still trains the adapter on the same facts (consolidation), for when retrieval misses.

The embeddings live in the database beside their entry. Search is exact cosine similarity in NumPy: at 100,000
wordings one product is about 40 MB of float32 and a few milliseconds (bench/memory.py measures it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, Field
from sqlalchemy import Engine, event
from sqlmodel import Session

from serving.access import Channel, Principal
from serving.api.interactions.protocol import MAX_CORRECTION_CHARS
from serving.approved_text import refuse_credentials
from serving.errors import Conflict, Forbidden, InvalidQuestion, NotFound, TuneloopError
from serving.memory_paraphrases import MemoryParaphraser
from store import audit as audit_repo
from store import memory as memory_repo
from store import vectors as vector_search
from store.audit import AuditEntry
from store.db import session_scope
from store.models import Correction, Interaction, MemoryEntry, MemoryMode, MemoryStatus
from store.pages import Page
from training.embedder import DIMENSIONS, embed

log = logging.getLogger(__name__)

# A change is committed at most this long after it was stamped (an approval's transaction takes milliseconds).
LATE_COMMIT_WINDOW = timedelta(seconds=30)
LATE_COMMIT_RECHECK_S = 1.0


class MemorySettings(BaseModel):
    enabled: bool = Field(default=True, description="Serve reviewed answers at once (off: only the adapter learns).")
    prompt_threshold: float = Field(
        default=0.60,
        ge=0,
        le=1,
        description="Entries at least this similar to a question (MiniLM cosine) go into the prompt as reviewed "
        "answers. Calibrated by bench/memory.py: see the README, 'How a correction reaches answers'.",
    )
    direct_threshold: float = Field(
        default=0.80,
        ge=0,
        le=1,
        description="At least this similar: the reviewed answer is given as is, without a model call.",
    )
    direct_answers: bool = Field(default=True, description="Off: matches only ever go into the prompt.")
    group_threshold: float = Field(
        default=0.90,
        ge=0,
        le=1,
        description="A corrected question at least this similar to an entry's wording is the same question: "
        "its approved answer replaces the entry's (the latest approval wins).",
    )
    max_prompt_answers: int = Field(default=2, ge=1, le=5, description="Reviewed answers put into one prompt.")
    pgvector: bool = Field(
        default=False,
        description="On PostgreSQL with the pgvector extension installed, search the wordings there (HNSW index); "
        "false, or elsewhere: exact cosine similarity in each process (off by default: not faster in "
        "bench/memory.py on this machine, see the README).",
    )
    paraphrases: int = Field(
        default=8,
        ge=0,
        le=16,
        description="Rewordings of a reviewed question the base model writes (one request, in the background after "
        "the approval) and the entry keeps, for recall and for the nightly training; 0: none.",
    )


@dataclass(frozen=True, kw_only=True)
class MemoryHit:
    entry_id: int
    score: float  # of the entry's wording nearest to the question, a paraphrase the base model wrote included
    wording: str  # the entry's asked wording nearest to the question (what a reviewer saw corrected)
    answer: str
    approved_by: str
    approved_at: datetime


@dataclass(frozen=True, kw_only=True)
class Recall:
    """What the memory offers one question: hits above the prompt threshold, best first, and how to use them."""

    hits: list[MemoryHit]
    mode: MemoryMode | None

    @property
    def best(self) -> MemoryHit | None:
        return self.hits[0] if self.hits else None


NOTHING = Recall(hits=[], mode=None)


@dataclass(frozen=True, kw_only=True)
class _EntryFacts:
    answer: str
    approved_by: str
    approved_at: datetime


class MemoryIndex:
    """The active wordings of one database, kept in step with it by change stamps. Thread-safe."""

    def __init__(self, engine: Engine, *, pgvector: bool = False) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        # PostgreSQL with pgvector searches the wordings itself; else the matrix below is searched here.
        self._pgvector = False
        if pgvector:
            why_not = vector_search.enable(engine)
            self._pgvector = why_not is None
            log.info("memory.search backend=%s%s", self.backend, f" reason={why_not}" if why_not else "")
        self._stamp: datetime | None = None
        self._loaded = False
        self._entries: dict[int, _EntryFacts] = {}
        self._versions: dict[int, datetime] = {}  # entry id -> the updated_at loaded
        self._rechecked_at = 0.0
        self._entry_ids: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._texts: list[str] = []
        self._asked: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._matrix: npt.NDArray[np.float32] = np.zeros((0, DIMENSIONS), dtype=np.float32)

    def refresh(self) -> None:
        with session_scope(self._engine) as session:
            stamp = memory_repo.latest_change(session=session)
            with self._lock:
                recheck_due = time.monotonic() - self._rechecked_at >= LATE_COMMIT_RECHECK_S
                if self._loaded and stamp == self._stamp and not recheck_due:
                    return
                # Two writers can commit out of stamp order: look back over a window, every second at least,
                # so that a change committed after a newer one is not skipped.
                since = self._stamp - LATE_COMMIT_WINDOW if self._loaded and self._stamp is not None else None
                entries, wordings = memory_repo.changed_since(session=session, stamp=since)
                changed = self._apply(entries, wordings, stamp)
                if self._pgvector and changed:
                    # Wordings written since, by any process, get their vector before they are searched.
                    vector_search.fill_missing(session=session)
                    session.commit()
                self._rechecked_at = time.monotonic()

    def _apply(
        self, entries: list[MemoryEntry], wordings: list[memory_repo.StoredWording], stamp: datetime | None
    ) -> int:
        """Load what changed; returns how many entries did."""
        # Rows of the look-back window that are already loaded as they are change nothing.
        entries = [e for e in entries if e.id is not None and self._versions.get(e.id) != e.updated_at]
        if self._loaded and not entries:
            self._stamp = stamp
            return 0
        changed = np.array([entry.id for entry in entries], dtype=np.int64)
        keep = ~np.isin(self._entry_ids, changed)
        for entry in entries:
            assert entry.id is not None
            self._versions[entry.id] = entry.updated_at
            self._entries.pop(entry.id, None)
            if entry.status == MemoryStatus.active:
                self._entries[entry.id] = _EntryFacts(
                    answer=entry.answer, approved_by=entry.approved_by, approved_at=entry.approved_at
                )
        changed_ids = {entry.id for entry in entries}
        added = [w for w in wordings if w.entry_id in changed_ids and w.entry_id in self._entries]
        vectors = (
            np.frombuffer(b"".join(w.embedding for w in added), dtype=np.float32).reshape(len(added), DIMENSIONS)
            if added
            else np.zeros((0, DIMENSIONS), dtype=np.float32)
        )
        self._matrix = np.vstack([self._matrix[keep], vectors])
        self._entry_ids = np.concatenate([self._entry_ids[keep], np.array([w.entry_id for w in added], np.int64)])
        self._texts = [t for t, k in zip(self._texts, keep, strict=True) if k] + [w.text for w in added]
        self._asked = np.concatenate([self._asked[keep], np.array([w.asked for w in added], np.bool_)])
        self._stamp = stamp
        self._loaded = True
        log.info("memory.reloaded changed_entries=%d wordings=%d", len(entries), len(self._texts))
        return len(entries)

    def nearest(
        self, vector: npt.NDArray[np.float32], *, limit: int, floor: float, asked_only: bool = False
    ) -> list[MemoryHit]:
        """The `limit` best entries at least `floor` similar, one hit per entry (its nearest wording; with
        `asked_only`, its nearest asked wording: the paraphrases the base model wrote are left out)."""
        with self._lock:
            if not len(self._texts):
                return []
            # More candidates than entries wanted: several of an entry's wordings may rank first (and, from pgvector,
            # wordings of retired entries, left out below).
            candidates = min(len(self._texts), limit * 8)
            if self._pgvector:
                with session_scope(self._engine) as session:
                    ranked = [
                        (w.entry_id, w.score, w.asked, w.text)
                        for w in vector_search.nearest_wordings(
                            session=session, vector=vector, limit=limit * 8, asked_only=asked_only
                        )
                    ]
            else:
                # In torch, on the embedder's own thread pool: NumPy's BLAS pool would wake beside it and double
                # the lookup's time on a small machine (bench/memory.py).
                scores = (torch.from_numpy(self._matrix) @ torch.from_numpy(vector)).numpy()
                if asked_only:
                    scores = np.where(self._asked, scores, np.float32(-2.0))
                top = np.argpartition(-scores, candidates - 1)[:candidates]
                ranked = [
                    (int(self._entry_ids[row]), float(scores[row]), bool(self._asked[row]), self._texts[row])
                    for row in top[np.argsort(-scores[top])]
                ]
            hits: list[MemoryHit] = []
            for entry_id, score, asked, wording in ranked:
                if score < floor or len(hits) == limit:
                    break
                # An entry retired or changed since this process loaded it is left to the next refresh.
                if entry_id in {hit.entry_id for hit in hits} or entry_id not in self._entries:
                    continue
                facts = self._entries[entry_id]
                hits.append(
                    MemoryHit(
                        entry_id=entry_id,
                        score=score,
                        # A paraphrase matched best: the prompt and the reviewer are shown the question asked.
                        wording=wording if asked else self._nearest_asked(entry_id, vector, default=wording),
                        answer=facts.answer,
                        approved_by=facts.approved_by,
                        approved_at=facts.approved_at,
                    )
                )
            return hits

    def _nearest_asked(self, entry_id: int, vector: npt.NDArray[np.float32], *, default: str) -> str:
        rows = np.flatnonzero((self._entry_ids == entry_id) & self._asked)
        if not len(rows):
            return default
        return self._texts[int(rows[np.argmax(self._matrix[rows] @ vector)])]

    @property
    def size(self) -> int:
        return len(self._texts)

    @property
    def backend(self) -> str:
        """How the wordings are searched: "pgvector" (in PostgreSQL) or "exact" (cosine in this process)."""
        return "pgvector" if self._pgvector else "exact"


def usable_answer(answer: str) -> str:
    """A reviewer's answer as it will be stored; InvalidQuestion when blank, too long or holding a credential."""
    text = answer.strip()
    if not text:
        raise InvalidQuestion("the answer is empty", hint="Write the answer the bot should give.")
    if len(text) > MAX_CORRECTION_CHARS:
        raise InvalidQuestion(f"the answer is over {MAX_CORRECTION_CHARS:,} characters")
    refuse_credentials(text, what="the answer")
    return text


class ReviewedMemory:
    """Lookups for answers, and the writes that approvals, edits and retirements make."""

    def __init__(
        self, *, engine: Engine, settings: MemorySettings, paraphraser: MemoryParaphraser | None = None
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._index = MemoryIndex(engine, pgvector=settings.pgvector)
        self._paraphraser = paraphraser

    @property
    def search_backend(self) -> str:
        """ "pgvector" (PostgreSQL with the extension) or "exact" (cosine similarity in this process)."""
        return self._index.backend

    @property
    def paraphraser(self) -> MemoryParaphraser | None:
        return self._paraphraser

    @property
    def settings(self) -> MemorySettings:
        return self._settings

    def warm_up(self) -> None:
        """Load the embedder and the index (seconds on a small machine), before the first question needs them."""
        self.recall("warm up")

    def recall(self, question: str) -> Recall:
        """The reviewed answers for `question` (blocking: the embedder and the store; call it in a thread)."""
        if not self._settings.enabled or not question.strip():
            return NOTHING
        hits = self.search(question, limit=self._settings.max_prompt_answers, floor=self._settings.prompt_threshold)
        if not hits:
            return NOTHING
        direct = self._settings.direct_answers and hits[0].score >= self._settings.direct_threshold
        return Recall(hits=hits, mode=MemoryMode.direct if direct else MemoryMode.prompt)

    def search(self, text: str, *, limit: int, floor: float = 0.0) -> list[MemoryHit]:
        self._index.refresh()
        return self._index.nearest(embed([text])[0], limit=limit, floor=floor)

    def entry_a_correction_replaces(self, interaction: Interaction) -> int | None:
        """The entry an approved correction of `interaction` would replace; None: it would become a new entry."""
        with session_scope(self._engine) as session:
            entry = self._same_question(session, interaction=interaction, vector=embed([interaction.question])[0])
        return entry.id if entry is not None else None

    def _same_question(
        self, session: Session, *, interaction: Interaction, vector: npt.NDArray[np.float32]
    ) -> MemoryEntry | None:
        # The entry an earlier correction of this very interaction made, else the one with a wording at least
        # `group_threshold` similar to the question (the same question group).
        assert interaction.id is not None
        entry = memory_repo.entry_of_interaction(session=session, interaction_id=interaction.id)
        if entry is None:
            self._index.refresh()
            # Asked wordings only: a paraphrase the model wrote may have drifted to another question.
            same = self._index.nearest(vector, limit=1, floor=self._settings.group_threshold, asked_only=True)
            if same:
                entry = memory_repo.get_entry(session=session, entry_id=same[0].entry_id)
        return entry

    def remember(self, *, session: Session, correction: Correction, interaction: Interaction) -> MemoryEntry:
        """Make an approved correction an entry, in the caller's transaction (committed with the approval).

        A correction of an interaction already corrected, or of a question at least `group_threshold` similar to
        an entry's wording, replaces that entry's answer: the latest approved correction of a group wins.
        """
        assert correction.reviewer_id is not None
        vector = embed([interaction.question])[0]
        entry = self._same_question(session, interaction=interaction, vector=vector)
        approval = memory_repo.Approval(
            answer=correction.text,
            approved_by=correction.reviewer_id,
            correction_id=correction.id,
            wording=interaction.question,
            embedding=vector.tobytes(),
            interaction_id=interaction.id,
        )
        entry, new_wording = memory_repo.remember(session=session, entry=entry, approval=approval)
        log.info("memory.remembered entry=%s correction=%s", entry.id, correction.id)
        paraphraser = self._paraphraser
        if new_wording and paraphraser is not None and entry.id is not None:
            # Only once the approval is stored: the entry serves at once, its paraphrases follow in seconds.
            entry_id, wording = entry.id, interaction.question
            event.listen(session, "after_commit", lambda _session: paraphraser.submit(entry_id, wording), once=True)
        return entry

    # --- Reviewers manage entries: the API, the CLI (through the API) and Slack's App Home call these. ---
    # All are blocking (the store, and the embedder for `find`): call them in a worker thread. Reading takes no
    # principal, so the caller checks the reviewer role first; `edit` and `retire` check it again and write their
    # audit event in the change's own commit (a refusal or a failure is audited on its own, afterwards).

    def list_entries(
        self, *, limit: int, before: int | None = None, status: MemoryStatus | None = MemoryStatus.active
    ) -> Page[MemoryEntry]:
        """Entries newest first, `limit` at a time (`before`: the previous page's `next_cursor`; status None: all)."""
        with session_scope(self._engine) as session:
            return memory_repo.page_entries(session=session, limit=limit, before=before, status=status)

    def find(self, query: str, *, limit: int) -> list[tuple[MemoryEntry, float]]:
        """Active entries by meaning: (entry, similarity of its nearest wording to `query`), best first.

        At most `limit`, and no further pages: a search is ranked, not listed. Raises InvalidQuestion when blank.
        """
        query = query.strip()
        if not query:
            raise InvalidQuestion("the search is empty", hint="Write a question the way someone would ask it.")
        hits = self.search(query, limit=limit)
        if not hits:
            return []
        with session_scope(self._engine) as session:
            rows = memory_repo.entries_by_id(session=session, entry_ids=[hit.entry_id for hit in hits])
        # An entry retired by another process since the index refreshed is left out.
        return [
            (rows[hit.entry_id], hit.score)
            for hit in hits
            if hit.entry_id in rows and rows[hit.entry_id].status == MemoryStatus.active
        ]

    def questions_of(self, entry_ids: list[int]) -> dict[int, str]:
        """Each entry's first wording of its question, to show beside its answer in a listing."""
        if not entry_ids:
            return {}
        with session_scope(self._engine) as session:
            return memory_repo.first_wordings(session=session, entry_ids=entry_ids)

    def show(self, entry_id: int) -> EntryDetails:
        """One entry with every wording of its question and how many answers used it. Raises NotFound."""
        with session_scope(self._engine) as session:
            entry = memory_repo.get_entry(session=session, entry_id=entry_id)
            if entry is None:
                raise _not_found(entry_id)
            return EntryDetails(
                entry=entry,
                wordings=memory_repo.wordings_of(session=session, entry_id=entry_id),
                answers_using=memory_repo.interactions_using(session=session, entry_id=entry_id),
            )

    def edit(self, entry_id: int, *, answer: str, by: Principal) -> MemoryEntry:
        """Replace an active entry's answer; `by` becomes who approved it. Audited as `memory.edit`.

        Raises InvalidQuestion (blank, or over MAX_CORRECTION_CHARS), Forbidden (not a reviewer), NotFound, and
        Conflict for a retired entry.
        """
        text = usable_answer(answer)

        def rewrite(session: Session, entry: MemoryEntry) -> dict[str, Any]:
            # Lengths only: the answer may hold personal data, and the audit log is kept for long.
            detail = {"chars": len(text), "previous_chars": len(entry.answer)}
            memory_repo.edit_answer(session=session, entry=entry, answer=text, editor=by.user_id)
            return detail

        return self._change(entry_id, by=by, action="memory.edit", apply=rewrite)

    def retire(self, entry_id: int, *, by: Principal) -> MemoryEntry:
        """Stop serving an entry, in every process from the next question on. Audited as `memory.retire`.

        Not idempotent: retiring a retired entry raises Conflict ("already retired"), as do NotFound and Forbidden.
        """

        def stop_serving(session: Session, entry: MemoryEntry) -> dict[str, Any]:
            memory_repo.retire(session=session, entry=entry, by=by.user_id)
            return {}

        return self._change(entry_id, by=by, action="memory.retire", apply=stop_serving)

    def _change(
        self,
        entry_id: int,
        *,
        by: Principal,
        action: str,
        apply: Callable[[Session, MemoryEntry], dict[str, Any]],
    ) -> MemoryEntry:
        """Apply a reviewer's change to an active entry and store its audit event in the same commit."""
        audit = AuditEntry(actor=by.user_id, source=AUDIT_SOURCES[by.via], action=action, target=f"memory:{entry_id}")
        if not by.is_reviewer:
            self._audit(replace(audit, outcome="refused", detail={"reason": "needs reviewer", "role": by.role.name}))
            raise Forbidden(
                f"{action} needs the reviewer role; {by.user_id} is {by.role.name}",
                hint="Ask an admin to add your id to TUNELOOP_ACCESS__REVIEWERS.",
            )
        try:
            with session_scope(self._engine) as session:
                entry = memory_repo.get_entry(session=session, entry_id=entry_id, for_update=True)
                if entry is None:
                    raise _not_found(entry_id)
                if entry.status == MemoryStatus.retired:
                    raise _retired(entry_id, action)
                detail = apply(session, entry)
                audit_repo.add_audit(session=session, entry=replace(audit, detail=detail))
                session.commit()
        except TuneloopError as error:
            self._audit(replace(audit, outcome="failed", detail={"error": error.message}))
            raise
        except Exception as error:
            self._audit(replace(audit, outcome="failed", detail={"error": f"unexpected: {type(error).__name__}"}))
            raise
        log.info("audit action=%s actor=%s target=%s outcome=ok", action, by.user_id, audit.target)
        return entry

    def _audit(self, entry: AuditEntry) -> None:
        """Audit a refusal or a failure on its own; if even that fails (the database is down), log it."""
        try:
            with session_scope(self._engine) as session:
                audit_repo.add_audit(session=session, entry=entry)
                session.commit()
        except Exception:
            log.exception("audit.write_failed action=%s actor=%s target=%s", entry.action, entry.actor, entry.target)
            return
        log.info(
            "audit action=%s actor=%s target=%s outcome=%s", entry.action, entry.actor, entry.target, entry.outcome
        )


# The audit event's source, by the channel that proved the reviewer's identity (the CLI acts through the API).
AUDIT_SOURCES: dict[Channel, str] = {"token": "api", "slack": "slack", "web": "ui"}


@dataclass(frozen=True, kw_only=True)
class EntryDetails:
    """One entry as a reviewer sees it."""

    entry: MemoryEntry
    wordings: list[str]  # every wording of its question, oldest first
    answers_using: int  # answers that used it, given as is or in the prompt


def _not_found(entry_id: int) -> NotFound:
    return NotFound(f"memory entry {entry_id} does not exist", hint="List entries with `tuneloop memory list`.")


def _retired(entry_id: int, action: str) -> Conflict:
    if action == "memory.retire":
        return Conflict(f"memory entry {entry_id} is already retired", hint="It is already retired: nothing to do.")
    return Conflict(
        f"memory entry {entry_id} is retired, so it is no longer served and stays as it was",
        hint="To serve an answer to its question again, correct an answer to that question: "
        "a reviewer's correction is served at once.",
    )
