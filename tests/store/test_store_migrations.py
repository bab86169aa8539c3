"""Alembic migrations: head matches the models, running them again is harmless (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, TypeDecorator, inspect, text
from sqlmodel import SQLModel

import store.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from store.db import alembic_config, make_engine, migrate
from store.interactions import create_interaction, list_interactions


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _versions(engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]


def _schema_diff(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)


def test_migrated_database_is_at_head(engine):
    assert _versions(engine) == [_head()]


def test_migrated_tables_are_the_models_tables(engine):
    tables = set(inspect(engine).get_table_names())
    assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
    assert {"interaction", "feedback", "correction", "adapterversion", "trainingrun", "auditevent"} <= tables


def test_head_schema_matches_the_models(engine):
    diff = _schema_diff(engine)
    assert diff == [], f"migrations and models disagree: {diff}"


def test_schema_diff_detects_drift(engine, backend):
    """The comparison above can fail: drop an index the models declare and it reports it."""
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_auditevent_created_at"))
    diff = _schema_diff(engine)
    assert any(d[0] == "add_index" and d[1].name == "ix_auditevent_created_at" for d in diff), diff


def test_migrate_twice_is_harmless_and_keeps_data(db_url, engine, session):
    created = create_interaction(session=session, user_id="U1", source="api", question="kept?")
    session.close()

    migrate(db_url)
    migrate(db_url)

    assert _versions(engine) == [_head()]
    assert _schema_diff(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM interaction")).scalar_one() == 1
    assert [i.id for i in list_interactions(session=session)] == [created.id]


def test_migrate_with_a_second_engine_sees_the_same_database(db_url):
    """make_engine(url) and migrate(url) address the same database (no stray files or schemas)."""
    other = make_engine(db_url)
    try:
        assert _versions(other) == [_head()]
    finally:
        other.dispose()


def test_timestamp_columns_are_timezone_aware(engine, backend):
    inspector = inspect(engine)
    datetime_columns = 0
    for table in SQLModel.metadata.tables.values():
        reflected = {c["name"]: c for c in inspector.get_columns(table.name)}
        for column in table.columns:
            column_type = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
            if not isinstance(column_type, DateTime):
                continue
            datetime_columns += 1
            assert column_type.timezone, f"{table.name}.{column.name} model type is naive"
            if backend == "postgresql":
                # SQLite has no timezone-aware type; PostgreSQL must use timestamptz.
                assert reflected[column.name]["type"].timezone, f"{table.name}.{column.name} is not timestamptz"
    # every created/updated/reviewed/promoted/started/finished/heartbeat/used/revoked/approved/retired/pruned_at,
    # and the dashboard sessions' expires_at and created_at
    assert datetime_columns == 24


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("true", pytest.fail.Exception), ("", pytest.skip.Exception), ("false", pytest.skip.Exception)],
)
def test_unreachable_postgres_policy(monkeypatch, unreachable_policy, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome) as excinfo:
        unreachable_policy("connection refused")
    assert str(excinfo.value.msg) == "PostgreSQL at 127.0.0.1:5432 unreachable: connection refused"
