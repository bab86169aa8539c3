"""store.runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from store import runs as repo
from store.models import RunStatus, TrainingRun


def _assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0)


def _stored(fresh_session, run_id: int) -> TrainingRun:
    with fresh_session() as other:
        run = other.get(TrainingRun, run_id)
        assert run is not None
        return run


def test_create_run(session, fresh_session):
    run = repo.create_run(session=session, trigger="nightly", triggered_by=None)
    assert run.id is not None
    stored = _stored(fresh_session, run.id)
    assert stored.trigger == "nightly"
    assert stored.triggered_by is None
    assert stored.status == RunStatus.queued
    assert stored.stage is None
    assert stored.progress == {}
    assert stored.counts == {}
    assert stored.metrics == {}
    assert stored.timings == {}
    assert stored.started_at is None
    assert stored.finished_at is None
    assert stored.adapter_version is None
    assert stored.error is None
    _assert_utc(stored.created_at)

    other = repo.create_run(session=session, trigger="slack", triggered_by="U7")
    assert other.id != run.id
    assert _stored(fresh_session, other.id).triggered_by == "U7"


def test_get_run(session):
    run = repo.create_run(session=session, trigger="cli", triggered_by="me")
    got = repo.get_run(session=session, run_id=run.id)
    assert got is not None and got.id == run.id
    assert repo.get_run(session=session, run_id=run.id + 100) is None


def test_list_runs_newest_first_with_limit(session):
    assert repo.list_runs(session=session) == []
    ids = [repo.create_run(session=session, trigger="cli", triggered_by=None).id for _ in range(4)]
    assert [r.id for r in repo.list_runs(session=session)] == list(reversed(ids))
    assert [r.id for r in repo.list_runs(session=session, limit=2)] == [ids[3], ids[2]]


@pytest.mark.parametrize("column", ["counts", "metrics", "timings"])
def test_update_run_merges_dict_columns(session, fresh_session, column):
    run = repo.create_run(session=session, trigger="cli", triggered_by=None)
    repo.update_run(session=session, run_id=run.id, **{column: {"a": 1, "b": 2}})
    updated = repo.update_run(session=session, run_id=run.id, **{column: {"b": 20, "c": {"nested": True}}})
    expected = {"a": 1, "b": 20, "c": {"nested": True}}
    assert getattr(updated, column) == expected
    assert getattr(_stored(fresh_session, run.id), column) == expected


def test_update_run_merges_on_top_of_what_another_session_wrote(session, fresh_session):
    """The merge starts from the database's value, not a stale copy in this session."""
    run = repo.create_run(session=session, trigger="cli", triggered_by=None)
    repo.update_run(session=session, run_id=run.id, counts={"votes": 1})
    with fresh_session() as other:
        repo.update_run(session=other, run_id=run.id, counts={"corrections": 2})
    repo.update_run(session=session, run_id=run.id, counts={"examples": 3})
    assert _stored(fresh_session, run.id).counts == {"votes": 1, "corrections": 2, "examples": 3}


def test_update_run_replaces_progress(session, fresh_session):
    run = repo.create_run(session=session, trigger="cli", triggered_by=None)
    repo.update_run(session=session, run_id=run.id, progress={"step": 1, "total": 10, "loss": 2.5})
    updated = repo.update_run(session=session, run_id=run.id, progress={"step": 2})
    assert updated.progress == {"step": 2}
    assert _stored(fresh_session, run.id).progress == {"step": 2}


def test_update_run_sets_plain_columns(session, fresh_session):
    run = repo.create_run(session=session, trigger="cli", triggered_by=None)
    repo.update_run(session=session, run_id=run.id, stage="train", adapter_version="v0004", error="oops")
    stored = _stored(fresh_session, run.id)
    assert (stored.stage, stored.adapter_version, stored.error) == ("train", "v0004", "oops")
    assert stored.status == RunStatus.queued
    assert stored.started_at is None
    assert stored.finished_at is None


def test_update_unknown_run_raises_lookup_error(session):
    with pytest.raises(LookupError):
        repo.update_run(session=session, run_id=4040, status=RunStatus.running)


def test_running_sets_started_at_once(session, fresh_session):
    run = repo.create_run(session=session, trigger="cli", triggered_by=None)
    before = datetime.now(UTC)
    running = repo.update_run(session=session, run_id=run.id, status=RunStatus.running)
    after = datetime.now(UTC)
    _assert_utc(running.started_at)
    assert before - timedelta(seconds=1) <= running.started_at <= after + timedelta(seconds=1)
    assert running.finished_at is None

    # Backdate it, then report running again (a new stage): started_at stays.
    early = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)
    repo.update_run(session=session, run_id=run.id, started_at=early)
    repo.update_run(session=session, run_id=run.id, status=RunStatus.running, stage="train")
    stored = _stored(fresh_session, run.id)
    assert stored.started_at == early
    assert stored.stage == "train"
    assert stored.finished_at is None


@pytest.mark.parametrize("final", [RunStatus.succeeded, RunStatus.failed, RunStatus.skipped])
def test_final_status_sets_finished_at(session, fresh_session, final):
    run = repo.create_run(session=session, trigger="cli", triggered_by=None)
    repo.update_run(session=session, run_id=run.id, status=RunStatus.running)
    before = datetime.now(UTC)
    done = repo.update_run(session=session, run_id=run.id, status=final)
    after = datetime.now(UTC)
    assert done.status == final
    stored = _stored(fresh_session, run.id)
    assert stored.status == final
    _assert_utc(stored.finished_at)
    _assert_utc(stored.started_at)
    assert before - timedelta(seconds=1) <= stored.finished_at <= after + timedelta(seconds=1)
    assert stored.started_at <= stored.finished_at


def test_queued_to_skipped_sets_finished_at_only(session, fresh_session):
    run = repo.create_run(session=session, trigger="nightly", triggered_by=None)
    repo.update_run(session=session, run_id=run.id, status=RunStatus.skipped)
    stored = _stored(fresh_session, run.id)
    assert stored.started_at is None
    _assert_utc(stored.finished_at)


def test_last_finished_run_is_the_newest_succeeded(session):
    assert repo.last_finished_run(session=session) is None
    statuses = [
        RunStatus.succeeded,
        RunStatus.succeeded,
        RunStatus.failed,
        RunStatus.skipped,
        RunStatus.running,
    ]
    ids = []
    for status in statuses:
        run = repo.create_run(session=session, trigger="cli", triggered_by=None)
        repo.update_run(session=session, run_id=run.id, status=status)
        ids.append(run.id)
    repo.create_run(session=session, trigger="cli", triggered_by=None)  # queued

    last = repo.last_finished_run(session=session)
    assert last is not None
    assert last.id == ids[1]
    assert last.status == RunStatus.succeeded


def test_last_finished_run_none_when_nothing_succeeded(session):
    for status in (RunStatus.failed, RunStatus.skipped, RunStatus.running):
        run = repo.create_run(session=session, trigger="cli", triggered_by=None)
        repo.update_run(session=session, run_id=run.id, status=status)
    assert repo.last_finished_run(session=session) is None


def test_unfinished_runs(session):
    assert repo.unfinished_runs(session=session) == []
    by_status: dict[str, int] = {}
    for status in (
        RunStatus.queued,
        RunStatus.running,
        RunStatus.succeeded,
        RunStatus.failed,
        RunStatus.skipped,
    ):
        run = repo.create_run(session=session, trigger="cli", triggered_by=None)
        if status != RunStatus.queued:
            repo.update_run(session=session, run_id=run.id, status=status)
        by_status[status] = run.id

    unfinished = repo.unfinished_runs(session=session)
    assert sorted(r.id for r in unfinished) == sorted([by_status[RunStatus.queued], by_status[RunStatus.running]])
    assert {r.status for r in unfinished} == {RunStatus.queued, RunStatus.running}
