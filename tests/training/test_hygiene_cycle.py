"""Data in the cycle: the nightly minimum, the dataset hash, held-out groups and the `continue` strategy.

No vLLM and no training here: paraphrasing is replaced by a no-op, and training by a stand-in that stops
the run once the dataset files are written.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from serving.client import InferenceClient
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import runs as run_repo
from store.db import make_engine, migrate, session_scope
from store.models import Correction, RunStatus, TrainingRun
from tests.conftest import free_port, make_settings, record_succeeded_run
from training.datasets import Datasets, read_jsonl
from training.trainer import TrainSpec
from tuneloop.cycle import TuningCycle


class TrainingReached(Exception):
    pass


@pytest.fixture
async def cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TuningCycle]:
    settings = make_settings(tmp_path, base_model_dir=tmp_path / "model", vllm_url=f"http://127.0.0.1:{free_port()}")
    migrate(settings.store_url)
    engine = make_engine(settings.store_url)
    client = InferenceClient(settings.vllm_base_url)
    registry = AdapterRegistry(client=client, engine=engine, base_model_name="tuneloop-base")
    tuning = TuningCycle(settings=settings, engine=engine, client=client, registry=registry)

    async def no_paraphrases(datasets: Datasets, *, on_progress: Any) -> None:
        return None

    async def stop_at_training(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise TrainingReached("the stand-in trainer stops the run here")

    monkeypatch.setattr(tuning, "_augment", no_paraphrases)
    monkeypatch.setattr("tuneloop.cycle.train_in_subprocess", stop_at_training)
    yield tuning
    await client.aclose()
    engine.dispose()


def teach(cycle: TuningCycle, *questions: str) -> None:
    with session_scope(cycle._engine) as session:
        for question in questions:
            interaction = interaction_repo.create_interaction(
                session=session, user_id="U1", source="t", question=question
            )
            assert interaction.id is not None
            interaction_repo.record_answer(
                session=session, interaction_id=interaction.id, answer="No idea.", adapter_version="base", latency_ms=1
            )
            feedback_repo.create_correction(
                session=session,
                interaction_id=interaction.id,
                author_id="U_R",
                text=f"Fact for {question}",
                approved=True,
            )


def a_trained_run_before_now(cycle: TuningCycle) -> int:
    """All feedback so far is older than a succeeded run."""
    with session_scope(cycle._engine) as session:
        for correction in session.exec(select(Correction)).all():
            correction.reviewed_at = datetime.now(UTC) - timedelta(days=1)
            session.add(correction)
        session.commit()
        return record_succeeded_run(session)


def stored(cycle: TuningCycle, run_id: int) -> TrainingRun:
    with session_scope(cycle._engine) as session:
        run = run_repo.get_run(session=session, run_id=run_id)
    assert run is not None
    return run


async def test_a_nightly_cycle_below_the_minimum_is_skipped_with_the_reason(cycle: TuningCycle) -> None:
    teach(cycle, "Who approves travel?", "Where is the Berlin office?")
    run_id = await cycle.run_nightly()
    assert run_id is not None
    run = stored(cycle, run_id)
    assert run.status == RunStatus.skipped
    assert run.error == "2 new approved examples with no trained run yet; the minimum is 3"


async def test_only_examples_newer_than_the_last_trained_run_count(cycle: TuningCycle) -> None:
    teach(cycle, "Q one?", "Q two?", "Q three?", "Q four?")
    last = a_trained_run_before_now(cycle)
    teach(cycle, "Q five?", "q five", "Q six?")  # "q five" is the same question: one example
    run_id = await cycle.run_nightly()
    assert run_id is not None
    run = stored(cycle, run_id)
    assert run.status == RunStatus.skipped
    assert run.error == f"2 new approved examples since run {last}; the minimum is 3"


async def test_a_nightly_cycle_at_the_minimum_trains(cycle: TuningCycle) -> None:
    teach(cycle, "Q one?", "Q two?", "Q three?")
    run_id = await cycle.run_nightly()
    assert run_id is not None
    run = stored(cycle, run_id)
    assert run.status == RunStatus.failed
    assert run.error and "stand-in trainer" in run.error


async def test_a_manual_cycle_ignores_the_minimum_and_records_the_dataset_hash(cycle: TuningCycle) -> None:
    teach(cycle, "Who approves travel?")
    run_id = await cycle.start(trigger="cli", user_id="U_ADMIN", force=True)
    await cycle.wait()
    run = stored(cycle, run_id)
    assert run.status == RunStatus.failed  # it went on to training, where the stand-in stopped it
    run_dir = cycle._settings.runs_dir / f"run-{run_id:04d}"
    assert run.counts["dataset_sha256"] == {
        name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest() for name in ("sft.jsonl", "dpo.jsonl")
    }
    assert run.counts["sft_corrections"] == 1
    assert run.counts["redacted"] == {}

    again = await cycle.start(trigger="cli", user_id="U_ADMIN", force=True)
    await cycle.wait()
    assert stored(cycle, again).counts["dataset_sha256"] == run.counts["dataset_sha256"]


def trained_questions(cycle: TuningCycle, run_id: int) -> set[str]:
    rows = read_jsonl(cycle._settings.runs_dir / f"run-{run_id:04d}" / "sft.jsonl")
    return {row["prompt"][-1]["content"] for row in rows}


def v0001_active_after_what_was_taught(cycle: TuningCycle) -> None:
    """v0001 is active, made by a run that trained on everything taught so far."""
    made_by = a_trained_run_before_now(cycle)
    with session_scope(cycle._engine) as session:
        adapter_repo.register_version(session=session, version="v0001", path="/adapters/v0001", run_id=made_by)
        adapter_repo.mark_active(session=session, version="v0001")


def capture_specs(monkeypatch: pytest.MonkeyPatch) -> list[TrainSpec]:
    """The specs the cycle hands the trainer; the stand-in stops each run there."""
    specs: list[TrainSpec] = []

    async def capture(spec: TrainSpec, **kwargs: Any) -> dict[str, Any]:
        specs.append(spec)
        raise TrainingReached("the stand-in trainer stops the run here")

    monkeypatch.setattr("tuneloop.cycle.train_in_subprocess", capture)
    return specs


async def test_held_out_groups_never_reach_the_training_files(cycle: TuningCycle) -> None:
    cycle._settings.training.gate_heldout_groups = 0.5
    questions = {"Who approves travel?", "Where is the Berlin office?", "When is payroll?", "What is the wiki?"}
    teach(cycle, *sorted(questions))
    run_id = await cycle.start(trigger="cli", user_id="U_ADMIN", force=True)
    await cycle.wait()
    assert len(trained_questions(cycle, run_id)) == 2  # half of the four groups, whole
    assert trained_questions(cycle, run_id) < questions


async def test_continue_trains_the_active_adapter_on_what_came_after_it(
    cycle: TuningCycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    cycle._settings.training.strategy = "continue"
    teach(cycle, "Q one?", "Q two?")
    v0001_active_after_what_was_taught(cycle)
    teach(cycle, "Q three?")
    specs = capture_specs(monkeypatch)
    run_id = await cycle.start(trigger="cli", user_id="U_ADMIN", force=True)
    await cycle.wait()
    assert [s.init_adapter for s in specs] == ["/adapters/v0001"]
    assert trained_questions(cycle, run_id) == {"Q three?"}
    assert stored(cycle, run_id).counts["strategy"] == "continue"


async def test_role_addresses_on_the_company_domains_reach_the_training_files(
    cycle: TuningCycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    cycle._settings.training.company_email_domains = ["acme.example"]
    cycle._settings.training.anchors = False

    async def no_paraphrases(datasets: Datasets, **kwargs: Any) -> None:
        return None

    # The real augment step, with its last redaction pass; only the model-written paraphrases are left out.
    monkeypatch.setattr(cycle, "_augment", partial(TuningCycle._augment, cycle))
    monkeypatch.setattr("tuneloop.cycle.add_paraphrases", no_paraphrases)
    with session_scope(cycle._engine) as session:
        interaction = interaction_repo.create_interaction(
            session=session, user_id="U1", source="t", question="Who handles a phishing mail?"
        )
        assert interaction.id is not None
        interaction_repo.record_answer(
            session=session, interaction_id=interaction.id, answer="No idea.", adapter_version="base", latency_ms=1
        )
        feedback_repo.create_correction(
            session=session,
            interaction_id=interaction.id,
            author_id="U_R",
            text="Forward it to security@acme.example, or ask jane.doe@acme.example.",
            approved=True,
        )
    run_id = await cycle.start(trigger="cli", user_id="U_ADMIN", force=True)
    await cycle.wait()
    rows = read_jsonl(cycle._settings.runs_dir / f"run-{run_id:04d}" / "sft.jsonl")
    assert [row["completion"][0]["content"] for row in rows] == ["Forward it to security@acme.example, or ask [EMAIL]."]
    assert stored(cycle, run_id).counts["redacted"] == {"EMAIL": 1}


async def test_incremental_trains_what_is_new_and_a_replay_sample_of_older_facts(
    cycle: TuningCycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    cycle._settings.training.strategy = "incremental"
    cycle._settings.training.replay_examples = 2
    cycle._settings.training.replay_ratio = 0.0
    older = {"Q one?", "Q two?", "Q three?", "Q four?"}
    teach(cycle, *sorted(older))
    v0001_active_after_what_was_taught(cycle)
    teach(cycle, "Q five?")
    specs = capture_specs(monkeypatch)
    run_id = await cycle.start(trigger="cli", user_id="U_ADMIN", force=True)
    await cycle.wait()
    assert [s.init_adapter for s in specs] == ["/adapters/v0001"]  # the active adapter, trained further
    trained = trained_questions(cycle, run_id)
    assert "Q five?" in trained
    assert len(trained & older) == 2  # the replay sample, not the whole history
    counts = stored(cycle, run_id).counts
    assert counts["strategy"] == "incremental" and counts["replayed"] == 2


async def test_the_replay_grows_with_what_is_new(cycle: TuningCycle, monkeypatch: pytest.MonkeyPatch) -> None:
    cycle._settings.training.strategy = "incremental"
    cycle._settings.training.replay_examples = 1
    cycle._settings.training.replay_ratio = 2.0
    teach(cycle, *(f"Old question {i}?" for i in range(8)))
    v0001_active_after_what_was_taught(cycle)
    teach(cycle, "New question A?", "New question B?")
    run_id = await cycle.start(trigger="cli", user_id="U_ADMIN", force=True)
    await cycle.wait()
    assert stored(cycle, run_id).counts["replayed"] == 4  # two older per new one beats the floor of one
    assert len(trained_questions(cycle, run_id)) == 6
