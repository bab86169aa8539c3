"""Fixtures for the store tests: every test runs on SQLite and on the real PostgreSQL.

Each test gets its own freshly migrated database (Alembic, via `store.db.migrate`):
a temp SQLite file, or a uniquely named PostgreSQL database that is dropped afterwards.
When PostgreSQL is unreachable the postgres tests are skipped visibly, or fail under CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlmodel import Session

from store.db import make_engine, migrate, session_scope

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_ADMIN_DB = "postgres"
TEST_DB_PREFIX = "tuneloop_test_"


def postgres_unreachable(reason: str) -> NoReturn:
    """Fail under CI (the database is part of the contract there); skip visibly elsewhere."""
    message = f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _describe(exc: Exception) -> str:
    """One line: psycopg's messages span several."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _admin_connect() -> psycopg.Connection:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True, connect_timeout=5
    )


@pytest.fixture(scope="session")
def _postgres_probe() -> str | None:
    """None when PostgreSQL answers, else why not (probed once per session, not per test)."""
    try:
        with _admin_connect() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return _describe(exc)
    return None


@pytest.fixture
def unreachable_policy() -> Callable[[str], NoReturn]:
    """The unreachable-PostgreSQL policy above, so that a test can pin it down."""
    return postgres_unreachable


def _postgres_database(probe: str | None) -> Iterator[str]:
    if probe is not None:
        postgres_unreachable(probe)
    name = f"{TEST_DB_PREFIX}{uuid.uuid4().hex[:10]}"
    try:
        with _admin_connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        postgres_unreachable(_describe(exc))
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _admin_connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a new, empty database of the backend this test runs on."""
    backend = request.node.callspec.params["db_url"]
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield from _postgres_database(request.getfixturevalue("_postgres_probe"))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """A freshly migrated database (Alembic head) on SQLite and on PostgreSQL."""
    url: str = request.getfixturevalue("empty_db_url")
    migrate(url)
    return url


@pytest.fixture
def backend(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with session_scope(engine) as session:
        yield session


@pytest.fixture
def fresh_session(engine: Engine) -> Iterator[Callable[[], Session]]:
    """Open a new session (empty identity map), to read back what was committed. Closed at teardown."""
    opened: list[Session] = []

    def _open() -> Session:
        s = Session(engine, expire_on_commit=False)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()
