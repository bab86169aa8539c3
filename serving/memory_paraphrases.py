"""Paraphrases of reviewed questions, written by the served base model and kept with their memory entry.

An approved correction is effective at once on its own wording; once its transaction commits, its wording is
queued here, and one request (`n` samples) to the base model writes rewordings of it in the background. Those
that stay on topic (training/augment.py's filter) and that hold nothing redaction would remove are stored as
the entry's `paraphrase` wordings, with their embeddings: retrieval compares a question with them like any
wording, and the nightly cycle trains on them instead of writing new ones every night.

One worker per process, one request at a time, seeded (see InferenceClient.sample). On start it also paraphrases
active entries that have none yet (approved while no worker ran, or before this existed).
"""

from __future__ import annotations

import asyncio
import logging
import queue

from sqlalchemy import Engine

from serving.client import InferenceClient
from serving.registry import AdapterRegistry
from store import memory as memory_repo
from store.db import session_scope
from training.augment import Generate, model_paraphrases
from training.embedder import embed
from training.prompts import Message
from training.redact import Redactor, find_credentials

log = logging.getLogger(__name__)


def base_model_sampler(client: InferenceClient, registry: AdapterRegistry, *, seed: int | None) -> Generate:
    """Samples of the plain base model (an adapter could echo its own taught answers), for paraphrases."""

    async def generate(messages: list[Message], count: int) -> list[str]:
        return await client.sample(
            model=registry.served_name("base"), messages=messages, n=count, max_tokens=48, temperature=0.9, seed=seed
        )

    return generate


class MemoryParaphraser:
    """Writes and stores the paraphrases of entries' questions; `submit` from any thread, `run` on the loop."""

    def __init__(self, *, engine: Engine, generate: Generate, count: int, redactor: Redactor) -> None:
        self._engine = engine
        self._generate = generate
        self.count = count  # rewordings written per wording; 0: none (a benchmark turns it off and on)
        self._redactor = redactor
        self._pending: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._busy = False
        self._done: set[tuple[int, str]] = set()  # the backfill and an approval can queue the same wording

    def submit(self, entry_id: int, wording: str) -> None:
        """Queue one wording of an entry for paraphrasing (thread-safe; called after the approval's commit)."""
        if self.count <= 0:
            return
        self._pending.put((entry_id, wording))
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def run(self) -> None:
        """The background worker: entries without paraphrases first, then what approvals queue. Runs until cancelled."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        if self.count <= 0:
            return
        try:
            missing = await asyncio.to_thread(self._entries_without_paraphrases)
        except Exception:
            log.exception("memory.paraphrase_backfill_failed")
            missing = []
        for entry_id, wording in missing:
            self._pending.put((entry_id, wording))
        while True:
            while not self._pending.empty():
                self._busy = True  # before the queue empties: `idle` is read from other threads
                entry_id, wording = self._pending.get()
                if (entry_id, wording) in self._done:
                    self._busy = False
                    continue
                self._done.add((entry_id, wording))
                try:
                    await self.paraphrase(entry_id, wording)
                except Exception as error:  # recall without paraphrases is still recall: log and go on
                    log.warning("memory.paraphrase_failed entry=%s error=%s", entry_id, type(error).__name__)
                finally:
                    self._busy = False
            await self._wake.wait()
            self._wake.clear()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written (tests and benchmarks wait for it)."""
        return self._pending.empty() and not self._busy

    async def paraphrase(self, entry_id: int, wording: str) -> list[str]:
        """Write (one request) and store paraphrases of one wording of an entry; returns those stored."""
        written = await model_paraphrases(wording, count=self.count, generate=self._generate, accept=self.storable)
        if written:
            added = await asyncio.to_thread(self._store, entry_id, written)
            log.info("memory.paraphrased entry=%s written=%d stored=%d", entry_id, len(written), added)
        return written

    async def paraphrases_of(self, entry_ids: list[int]) -> dict[int, list[str]]:
        """Each entry's stored paraphrases; an entry that has none is paraphrased first (one request each).

        The nightly cycle trains on these: a group is paraphrased once, and kept with its entry."""
        stored = await asyncio.to_thread(self._stored, entry_ids)
        for entry_id in entry_ids:
            if entry_id in stored:
                continue
            wording = await asyncio.to_thread(self._first_wording, entry_id)
            if wording is not None and self.count > 0:
                stored[entry_id] = await self.paraphrase(entry_id, wording)
        return stored

    def storable(self, text: str) -> bool:
        """Stored text is held to what a reviewer's text is: no credential, nothing redaction would remove."""
        return not find_credentials(text) and self._redactor.redact(text).strip() == text.strip()

    def _store(self, entry_id: int, texts: list[str]) -> int:
        vectors = embed(texts)
        wordings = [
            memory_repo.NewWording(text=text, embedding=vector.tobytes())
            for text, vector in zip(texts, vectors, strict=True)
        ]
        with session_scope(self._engine) as session:
            added = memory_repo.add_paraphrases(session=session, entry_id=entry_id, wordings=wordings)
            session.commit()
        return added

    def _stored(self, entry_ids: list[int]) -> dict[int, list[str]]:
        with session_scope(self._engine) as session:
            return memory_repo.paraphrases_of(session=session, entry_ids=entry_ids)

    def _first_wording(self, entry_id: int) -> str | None:
        with session_scope(self._engine) as session:
            return memory_repo.first_wordings(session=session, entry_ids=[entry_id]).get(entry_id)

    def _entries_without_paraphrases(self) -> list[tuple[int, str]]:
        with session_scope(self._engine) as session:
            return memory_repo.entries_without_paraphrases(session=session)
