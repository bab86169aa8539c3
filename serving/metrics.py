"""The service's Prometheus metrics: one registry per service, recorded by the services, exposed at GET /metrics.

Each service owns a `ServiceMetrics` (its own CollectorRegistry, never the process-wide default), so two services
in one process count apart. Counters and histograms are recorded where things happen (answers, feedback, cycles,
the engine keeper); gauges of stored state (pending corrections, memory entries) are read from the store when
Prometheus scrapes, by `StoredState`. Labels are versions, modes, codes and outcomes only: never a question, an
answer or a user id (privacy, and one series per label value).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from store import feedback as feedback_repo
from store import memory as memory_repo
from store.db import session_scope
from store.models import CorrectionStatus, MemoryMode

log = logging.getLogger(__name__)

NO_MEMORY = "none"
NO_VERSION = "none"  # an interaction that failed has no adapter version
ANSWER_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
FIRST_TEXT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A cycle's stages take seconds (datasets, swap) to an hour or more (training on a CPU).
STAGE_BUCKETS_S = (0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
# The run record's timings keys, and the stage each one times.
STAGE_TIMINGS = {"datasets_s": "datasets", "training_s": "training", "evaluation_s": "evaluation", "swap_s": "swap"}


class ServiceMetrics:
    """The counters and histograms of one service, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        answer = ["version", "memory"]
        self.answers = Counter(
            "tuneloop_answers", "Answers given, by adapter version and memory use.", answer, registry=self.registry
        )
        self.answer_seconds = Histogram(
            "tuneloop_answer_seconds",
            "Seconds from the recorded question to the recorded answer.",
            answer,
            buckets=ANSWER_BUCKETS_S,
            registry=self.registry,
        )
        self.first_text_seconds = Histogram(
            "tuneloop_answer_first_text_seconds",
            "Seconds from the recorded question to the first text of a streamed answer (time to first token).",
            answer,
            buckets=FIRST_TEXT_BUCKETS_S,
            registry=self.registry,
        )
        self.answer_characters = Counter(
            "tuneloop_answer_characters",
            "Characters of answer text given (characters, not tokens), by adapter version.",
            ["version"],
            registry=self.registry,
        )
        self.failed_answers = Counter(
            "tuneloop_answers_failed", "Questions that got no answer, by error code.", ["code"], registry=self.registry
        )
        self.memory_hits = Counter(
            "tuneloop_memory_hits",
            "Answers that used a reviewed answer: in the prompt, or given as is (direct).",
            ["mode"],
            registry=self.registry,
        )
        self.votes = Counter(
            "tuneloop_votes",
            "Votes cast (a changed vote counts again), by the voted answer's adapter version and direction.",
            ["version", "direction"],
            registry=self.registry,
        )
        self.corrections_submitted = Counter(
            "tuneloop_corrections_submitted", "Corrections submitted.", registry=self.registry
        )
        self.corrections_approved = Counter(
            "tuneloop_corrections_approved",
            "Corrections approved (a reviewer's own correction is approved as it is submitted).",
            registry=self.registry,
        )
        self.corrections_rejected = Counter(
            "tuneloop_corrections_rejected", "Corrections rejected by a reviewer.", registry=self.registry
        )
        self.cycle_runs = Counter(
            "tuneloop_cycle_runs",
            "Tuning cycles finished, by outcome (succeeded, rejected, skipped, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.cycle_stage_seconds = Histogram(
            "tuneloop_cycle_stage_seconds",
            "Seconds a finished cycle spent in each stage it reached.",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=self.registry,
        )
        self.engine_restarts = Counter(
            "tuneloop_engine_restarts",
            "Times vLLM was found down or failed to start, and is started (or, when external, awaited) again.",
            registry=self.registry,
        )

    def answered(
        self,
        *,
        version: str,
        memory: MemoryMode | None,
        seconds: float,
        first_text_s: float | None,
        characters: int,
    ) -> None:
        mode = memory.value if memory is not None else NO_MEMORY
        self.answers.labels(version=version, memory=mode).inc()
        self.answer_seconds.labels(version=version, memory=mode).observe(seconds)
        if first_text_s is not None:
            self.first_text_seconds.labels(version=version, memory=mode).observe(first_text_s)
        self.answer_characters.labels(version=version).inc(characters)
        if memory is not None:
            self.memory_hits.labels(mode=mode).inc()

    def answer_failed(self, *, code: str) -> None:
        self.failed_answers.labels(code=code).inc()

    def voted(self, *, version: str | None, vote: int) -> None:
        self.votes.labels(version=version or NO_VERSION, direction="up" if vote > 0 else "down").inc()

    def correction_submitted(self, *, approved: bool) -> None:
        self.corrections_submitted.inc()
        if approved:
            self.corrections_approved.inc()

    def correction_reviewed(self, *, approved: bool) -> None:
        (self.corrections_approved if approved else self.corrections_rejected).inc()

    def cycle_finished(self, *, outcome: str, timings: Mapping[str, Any]) -> None:
        self.cycle_runs.labels(outcome=outcome).inc()
        for key, stage in STAGE_TIMINGS.items():
            seconds = timings.get(key)
            if isinstance(seconds, int | float):
                self.cycle_stage_seconds.labels(stage=stage).observe(seconds)


class StoredState(Collector):
    """Gauges read at scrape time: the engine and the active version from memory, the rest from the store.

    It keeps no state of its own: every scrape reads afresh in its own session, so concurrent scrapes are safe.
    Collected in a worker thread (the /metrics route), so the store reads never block the event loop.
    """

    def __init__(self, *, engine: Engine, active_version: Callable[[], str], engine_up: Callable[[], bool]) -> None:
        self._engine = engine
        self._active_version = active_version
        self._engine_up = engine_up

    def describe(self) -> Iterable[Metric]:
        # Names only, so that registering does not read the store.
        return [
            _gauge("tuneloop_engine_up"),
            InfoMetricFamily("tuneloop_active_version", ""),
            _gauge("tuneloop_store_up"),
            _gauge("tuneloop_corrections_pending"),
            _gauge("tuneloop_memory_entries"),
        ]

    def collect(self) -> Iterable[Metric]:
        yield _gauge(
            "tuneloop_engine_up",
            "1 while vLLM passes the keeper's health probe with the active adapter loaded, else 0.",
            value=1.0 if self._engine_up() else 0.0,
        )
        yield InfoMetricFamily(
            "tuneloop_active_version", "The adapter version that answers.", value={"version": self._active_version()}
        )
        try:
            pending, entries = self._read_store()
        except Exception as error:  # the other metrics still go out: the store being down is what they must show
            log.warning("metrics.store_unreadable error=%s", type(error).__name__, exc_info=error)
            yield _gauge("tuneloop_store_up", "1 when the store answered this scrape, else 0.", value=0.0)
            return
        yield _gauge("tuneloop_store_up", "1 when the store answered this scrape, else 0.", value=1.0)
        yield _gauge("tuneloop_corrections_pending", "Corrections waiting for a reviewer.", value=float(pending))
        memory = GaugeMetricFamily(
            "tuneloop_memory_entries", "Reviewed answers in the memory, by status.", labels=["status"]
        )
        for status, count in sorted(entries.items()):
            memory.add_metric([status], float(count))
        yield memory

    def _read_store(self) -> tuple[int, dict[str, int]]:
        with session_scope(self._engine) as session:
            pending = feedback_repo.count_corrections(session=session, status=CorrectionStatus.pending)
            entries = memory_repo.count_entries(session=session)
        return pending, entries


def _gauge(name: str, documentation: str = "", *, value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
