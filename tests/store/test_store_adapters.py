"""store.adapters on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from store import adapters as repo
from store.db import alembic_config, make_engine, migrate, session_scope
from store.models import BASE_VERSION, AdapterStatus, AdapterVersion
from store.runs import create_run


def _assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0)


def _register(session, version: str, **kwargs) -> AdapterVersion:
    kwargs.setdefault("path", f"/adapters/{version}")
    kwargs.setdefault("run_id", None)
    return repo.register_version(session=session, version=version, **kwargs)


def _active(session) -> list[str]:
    rows = session.exec(select(AdapterVersion).where(AdapterVersion.status == AdapterStatus.active)).all()
    return sorted(r.version for r in rows)


def _all_rows(fresh_session) -> dict[str, AdapterVersion]:
    with fresh_session() as other:
        return {r.version: r for r in other.exec(select(AdapterVersion)).all()}


# --- ensure_base_version -------------------------------------------------------------------------------


def test_ensure_base_version_on_empty_store_makes_base_active(session, fresh_session):
    base = repo.ensure_base_version(session=session)
    assert base.version == BASE_VERSION
    rows = _all_rows(fresh_session)
    assert list(rows) == [BASE_VERSION]
    stored = rows[BASE_VERSION]
    assert stored.status == AdapterStatus.active
    assert stored.path is None
    assert stored.run_id is None
    assert stored.metrics == {}
    _assert_utc(stored.promoted_at)
    _assert_utc(stored.created_at)


def test_ensure_base_version_is_idempotent(session, fresh_session):
    first = repo.ensure_base_version(session=session)
    second = repo.ensure_base_version(session=session)
    assert second.id == first.id
    assert second.promoted_at == first.promoted_at
    rows = _all_rows(fresh_session)
    assert list(rows) == [BASE_VERSION]


def test_ensure_base_version_does_not_reactivate_base(session, fresh_session):
    repo.ensure_base_version(session=session)
    _register(session, "v0001")
    repo.mark_active(session=session, version="v0001")
    again = repo.ensure_base_version(session=session)
    assert again.status == AdapterStatus.ready
    assert _active(session) == ["v0001"]


def test_ensure_base_version_when_another_is_active_keeps_it(session, fresh_session):
    _register(session, "v0001")
    repo.mark_active(session=session, version="v0001")

    base = repo.ensure_base_version(session=session)

    assert base.status == AdapterStatus.ready
    assert base.promoted_at is None
    rows = _all_rows(fresh_session)
    assert rows[BASE_VERSION].status == AdapterStatus.ready
    assert rows["v0001"].status == AdapterStatus.active
    assert _active(session) == ["v0001"]


# --- next_version_name / register_version -----------------------------------------------------------------


def test_next_version_name_increments(session):
    assert repo.next_version_name(session=session) == "v0001"
    repo.ensure_base_version(session=session)
    assert repo.next_version_name(session=session) == "v0001"  # base does not count
    _register(session, repo.next_version_name(session=session))
    assert repo.next_version_name(session=session) == "v0002"
    _register(session, repo.next_version_name(session=session))
    assert repo.next_version_name(session=session) == "v0003"
    assert sorted(r.version for r in repo.list_versions(session=session)) == [BASE_VERSION, "v0001", "v0002"]


def test_next_version_name_is_numeric_not_lexicographic_and_skips_gaps(session):
    _register(session, "v0009")
    _register(session, "v0002")
    assert repo.next_version_name(session=session) == "v0010"
    _register(session, "v0010")
    assert repo.next_version_name(session=session) == "v0011"


def test_next_version_name_ignores_other_names(session):
    _register(session, "v0003")
    _register(session, "experiment")
    _register(session, "vnext")
    assert repo.next_version_name(session=session) == "v0004"


def test_register_version_persists(session, fresh_session):
    run = create_run(session=session, trigger="cli", triggered_by="me")
    created = _register(session, "v0001", path="/a/v0001", run_id=run.id, metrics={"eval_loss": 0.5, "n": 3})
    assert created.status == AdapterStatus.ready
    stored = _all_rows(fresh_session)["v0001"]
    assert stored.path == "/a/v0001"
    assert stored.run_id == run.id
    assert stored.metrics == {"eval_loss": 0.5, "n": 3}
    assert stored.status == AdapterStatus.ready
    assert stored.promoted_at is None
    _assert_utc(stored.created_at)


def test_register_version_twice_is_refused_by_the_database(session):
    _register(session, "v0001")
    with pytest.raises(IntegrityError):
        _register(session, "v0001")
    session.rollback()
    assert [r.version for r in repo.list_versions(session=session)] == ["v0001"]


def test_register_version_with_unknown_run_is_refused_by_the_database(session):
    with pytest.raises(IntegrityError):
        _register(session, "v0001", run_id=99999)
    session.rollback()


def test_get_version_and_list_versions(session):
    assert repo.get_version(session=session, version="v0001") is None
    assert repo.list_versions(session=session) == []
    repo.ensure_base_version(session=session)
    _register(session, "v0002")
    _register(session, "v0001")
    got = repo.get_version(session=session, version="v0001")
    assert got is not None and got.path == "/adapters/v0001"
    assert [r.version for r in repo.list_versions(session=session)] == [BASE_VERSION, "v0002", "v0001"]


# --- mark_active / get_active_version ----------------------------------------------------------------------


def test_get_active_version(session):
    assert repo.get_active_version(session=session) is None
    repo.ensure_base_version(session=session)
    active = repo.get_active_version(session=session)
    assert active is not None and active.version == BASE_VERSION


def test_mark_active_leaves_exactly_one_active(session, fresh_session):
    repo.ensure_base_version(session=session)
    for name in ("v0001", "v0002", "v0003"):
        _register(session, name)

    for name in ("v0001", "v0003", "v0002", BASE_VERSION, "v0002"):
        promoted = repo.mark_active(session=session, version=name)
        assert promoted.version == name
        assert promoted.status == AdapterStatus.active
        _assert_utc(promoted.promoted_at)
        rows = _all_rows(fresh_session)
        assert [v for v, r in rows.items() if r.status == AdapterStatus.active] == [name]
        assert all(r.status == AdapterStatus.ready for v, r in rows.items() if v != name)
        active = repo.get_active_version(session=session)
        assert active is not None and active.version == name


def test_mark_active_on_the_active_version_keeps_it_active(session):
    repo.ensure_base_version(session=session)
    repo.mark_active(session=session, version=BASE_VERSION)
    assert _active(session) == [BASE_VERSION]


def test_mark_active_does_not_unreject(session, fresh_session):
    _register(session, "v0001")
    _register(session, "v0002")
    repo.mark_active(session=session, version="v0001")
    repo.set_version_status(session=session, version="v0002", status=AdapterStatus.rejected)
    repo.mark_active(session=session, version="v0001")
    assert _all_rows(fresh_session)["v0002"].status == AdapterStatus.rejected


def test_mark_active_unknown_version_raises_lookup_error_and_changes_nothing(session):
    repo.ensure_base_version(session=session)
    with pytest.raises(LookupError, match="v0042"):
        repo.mark_active(session=session, version="v0042")
    assert _active(session) == [BASE_VERSION]


# --- previous_active_version -----------------------------------------------------------------------------


def test_previous_active_version_none_without_history(session):
    assert repo.previous_active_version(session=session) is None
    repo.ensure_base_version(session=session)
    assert repo.previous_active_version(session=session) is None
    _register(session, "v0001")  # registered but never served
    assert repo.previous_active_version(session=session) is None


def test_previous_active_version_includes_base(session):
    repo.ensure_base_version(session=session)
    _register(session, "v0001")
    repo.mark_active(session=session, version="v0001")
    previous = repo.previous_active_version(session=session)
    assert previous is not None and previous.version == BASE_VERSION


def test_previous_active_version_is_the_one_before_the_current(session):
    repo.ensure_base_version(session=session)
    _register(session, "v0001")
    _register(session, "v0002")
    repo.mark_active(session=session, version="v0001")
    repo.mark_active(session=session, version="v0002")
    previous = repo.previous_active_version(session=session)
    assert previous is not None and previous.version == "v0001"

    # Roll back to v0001: now v0002 is the one that served before.
    repo.mark_active(session=session, version="v0001")
    previous = repo.previous_active_version(session=session)
    assert previous is not None and previous.version == "v0002"


def test_previous_active_version_orders_by_promotion_time_not_id(session):
    """Explicit promotion times whose order differs from the id order."""
    repo.ensure_base_version(session=session)
    for name in ("v0001", "v0002", "v0003"):
        _register(session, name)
    repo.mark_active(session=session, version="v0003")
    times = {
        BASE_VERSION: datetime(2024, 1, 1, tzinfo=UTC),
        "v0002": datetime(2024, 2, 1, tzinfo=UTC),
        "v0001": datetime(2024, 3, 1, tzinfo=UTC),  # promoted after v0002 (a rollback to it)
        "v0003": datetime(2024, 4, 1, tzinfo=UTC),
    }
    for name, when in times.items():
        row = repo.get_version(session=session, version=name)
        assert row is not None
        row.promoted_at = when
        session.add(row)
    session.commit()

    previous = repo.previous_active_version(session=session)
    assert previous is not None and previous.version == "v0001"


# --- set_version_status --------------------------------------------------------------------------------


def test_set_version_status(session, fresh_session):
    _register(session, "v0001")
    changed = repo.set_version_status(session=session, version="v0001", status=AdapterStatus.rejected)
    assert changed.status == AdapterStatus.rejected
    assert _all_rows(fresh_session)["v0001"].status == AdapterStatus.rejected
    repo.set_version_status(session=session, version="v0001", status="ready")
    assert _all_rows(fresh_session)["v0001"].status == AdapterStatus.ready


def test_set_version_status_unknown_raises_lookup_error(session):
    with pytest.raises(LookupError):
        repo.set_version_status(session=session, version="v0404", status=AdapterStatus.rejected)


# --- one active version, enforced by the database ------------------------------------------------------------


def test_the_database_refuses_a_second_active_row(session: Session) -> None:
    repo.ensure_base_version(session=session)
    repo.register_version(session=session, version="v0001", path="/a/v1", run_id=None)
    row = repo.get_version(session=session, version="v0001")
    assert row is not None
    row.status = AdapterStatus.active  # written behind mark_active's back: base is still active
    session.add(row)
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    assert [v.version for v in repo.list_versions(session=session) if v.status == AdapterStatus.active] == ["base"]


def test_promotions_from_two_connections_at_once_leave_exactly_one_active(engine: Engine, backend: str) -> None:
    """Two service processes promote in the same instant: one wins the race, the other fails or goes after it."""
    with session_scope(engine) as session:
        repo.ensure_base_version(session=session)
        for number in (1, 2):
            repo.register_version(session=session, version=f"v000{number}", path=f"/a/v{number}", run_id=None)
    first = Session(engine, expire_on_commit=False)
    repo.mark_active(session=first, version="v0001", commit=False)  # holds its transaction open

    def promote_second() -> str:
        with session_scope(engine) as second:
            try:
                repo.mark_active(session=second, version="v0002")
            except IntegrityError:
                return "refused"
            return "committed"

    with ThreadPoolExecutor(1) as pool:
        second_outcome = pool.submit(promote_second)
        if backend == "postgresql":
            _wait_until_a_transaction_waits_on_a_lock(engine)
        assert not second_outcome.done()  # SQLite: its write waits for the first one's write lock
        first.commit()
        first.close()
        outcome = second_outcome.result(timeout=60)

    with session_scope(engine) as session:
        active = [v.version for v in repo.list_versions(session=session) if v.status == AdapterStatus.active]
    # SQLite serialises whole transactions, so the second one reads the first's result and goes after it;
    # PostgreSQL's second UPDATE did not see v0001 become active, and the unique index refuses it.
    assert outcome == ("committed" if backend == "sqlite" else "refused")
    assert active == (["v0002"] if outcome == "committed" else ["v0001"])


def _wait_until_a_transaction_waits_on_a_lock(engine: Engine, timeout_s: float = 30) -> None:
    """PostgreSQL says when a backend is blocked on a lock: the race this test is about is then really on."""
    deadline = time.monotonic() + timeout_s
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while True:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one() > 0:
                return
        assert time.monotonic() < deadline, "the second promotion never waited on the first one's lock"
        time.sleep(0.01)  # polling the server's own view of the lock, not standing in for it


def test_active_stamp_changes_with_every_promotion_and_rollback(session: Session) -> None:
    repo.ensure_base_version(session=session)
    repo.register_version(session=session, version="v0001", path="/a/v1", run_id=None)
    stamps = [repo.active_stamp(session=session)]
    repo.mark_active(session=session, version="v0001")
    stamps.append(repo.active_stamp(session=session))
    repo.mark_active(session=session, version="base")
    stamps.append(repo.active_stamp(session=session))
    assert [s[0] for s in stamps if s] == ["base", "v0001", "base"]
    assert len(set(stamps)) == 3, "a rollback to base must not look like the base that served at first"


def test_an_old_store_with_two_active_rows_keeps_the_latest_promoted_one(empty_db_url: str, db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        command.downgrade(alembic_config(empty_db_url), "0005")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM adapterversion"))
            for number, promoted in ((1, "2026-01-01"), (2, "2026-02-01"), (3, None)):
                conn.execute(
                    text(
                        "INSERT INTO adapterversion (version, path, status, metrics, created_at, promoted_at) "
                        "VALUES (:v, '/a', 'active', '{}', '2026-01-01', :p)"
                    ),
                    {"v": f"v000{number}", "p": promoted},
                )
        migrate(empty_db_url)
        with session_scope(engine) as session:
            active = [v.version for v in repo.list_versions(session=session) if v.status == AdapterStatus.active]
        assert active == ["v0002"]
    finally:
        engine.dispose()
