"""Votes, corrections and their review: the one place the API and the Slack bot record feedback."""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlmodel import Session

from serving.access import AccessPolicy
from serving.approved_text import refuse_credentials
from serving.errors import Conflict, Forbidden, InvalidQuestion, NotFound
from serving.memory import ReviewedMemory
from serving.metrics import ServiceMetrics
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import Correction, CorrectionStatus, Feedback

log = logging.getLogger(__name__)

MAX_CORRECTION_CHARS = 8000


class FeedbackService:
    def __init__(
        self,
        *,
        engine: Engine,
        access: AccessPolicy,
        memory: ReviewedMemory | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._access = access
        self._memory = memory
        # None: counted in a registry of its own that nobody scrapes (tests, scripts).
        self._metrics = metrics if metrics is not None else ServiceMetrics()

    def _into_memory(self, session: Session, correction: Correction) -> None:
        """An approved correction becomes a reviewed answer in the same transaction as the approval."""
        refuse_credentials(correction.text, what="the correction")  # one submitted before the check existed
        if self._memory is None:
            return
        interaction = interaction_repo.get_interaction(session=session, interaction_id=correction.interaction_id)
        assert interaction is not None
        self._memory.remember(session=session, correction=correction, interaction=interaction)

    def vote(self, *, interaction_id: int, user_id: str, vote: int) -> Feedback:
        with session_scope(self._engine) as session:
            try:
                feedback = feedback_repo.record_vote(
                    session=session, interaction_id=interaction_id, user_id=user_id, vote=vote
                )
            except LookupError as error:
                raise NotFound(str(error)) from error
            interaction = interaction_repo.get_interaction(session=session, interaction_id=interaction_id)
            version = interaction.adapter_version if interaction is not None else None
        log.info("feedback.vote interaction=%s vote=%+d", interaction_id, vote)
        self._metrics.voted(version=version, vote=vote)
        return feedback

    def check_correction(self, *, interaction_id: int, text: str) -> None:
        """Raise what `correct` would refuse `text` for, reading only (Slack's modal acks with it before the write)."""
        with session_scope(self._engine) as session:
            self._refuse_unusable(session, interaction_id=interaction_id, text=text.strip())

    def correct(self, *, interaction_id: int, user_id: str, text: str) -> Correction:
        text = text.strip()
        with session_scope(self._engine) as session:
            self._refuse_unusable(session, interaction_id=interaction_id, text=text)
            correction = feedback_repo.create_correction(
                session=session,
                interaction_id=interaction_id,
                author_id=user_id,
                text=text,
                approved=self._access.is_reviewer(user_id),
                on_approved=self._into_memory,
            )
        log.info("feedback.correction id=%s interaction=%s status=%s", correction.id, interaction_id, correction.status)
        self._metrics.correction_submitted(approved=correction.status == CorrectionStatus.approved)
        return correction

    @staticmethod
    def _refuse_unusable(session: Session, *, interaction_id: int, text: str) -> None:
        interaction = interaction_repo.get_interaction(session=session, interaction_id=interaction_id)
        if interaction is None:
            raise NotFound(f"interaction {interaction_id} does not exist")
        if not text:
            raise InvalidQuestion("the correction is empty", hint="Write the answer the bot should give.")
        if len(text) > MAX_CORRECTION_CHARS:
            raise InvalidQuestion(f"the correction is over {MAX_CORRECTION_CHARS:,} characters")
        if text == (interaction.answer or "").strip():
            raise InvalidQuestion("the correction is the same as the answer", hint="Change the text first.")
        refuse_credentials(text, what="the correction")

    def review(self, *, correction_id: int, user_id: str, approve: bool, text: str | None = None) -> Correction:
        """Approve or reject a pending correction; an approval with `text` approves that text instead (an edit)."""
        if not self._access.is_reviewer(user_id):
            raise Forbidden(f"{user_id} is not a reviewer", hint="Ask an admin to add you to the reviewers.")
        with session_scope(self._engine) as session:
            if text is not None:
                text = text.strip()
                if not approve:
                    raise InvalidQuestion("only an approval may change a correction's text")
                pending = feedback_repo.get_correction(session=session, correction_id=correction_id)
                if pending is not None:
                    self._refuse_unusable(session, interaction_id=pending.interaction_id, text=text)
            try:
                correction = feedback_repo.review_correction(
                    session=session,
                    correction_id=correction_id,
                    reviewer_id=user_id,
                    approve=approve,
                    on_approved=self._into_memory,
                    text=text,
                )
            except LookupError as error:
                raise NotFound(str(error)) from error
            except ValueError as error:
                raise Conflict(str(error)) from error
        log.info("feedback.review correction=%s status=%s", correction_id, correction.status)
        self._metrics.correction_reviewed(approved=correction.status == CorrectionStatus.approved)
        return correction

    def pending(self) -> list[Correction]:
        with session_scope(self._engine) as session:
            return feedback_repo.list_corrections(session=session, status="pending")
