"""A real SQLite store per test, and a helper that records an answered interaction in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from store import interactions as interaction_repo
from store.db import make_engine, migrate, session_scope


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as s:
        yield s
    engine.dispose()


def answered(
    session: Session, question: str, answer: str = "No idea.", *, context: list[dict[str, str]] | None = None
) -> int:
    interaction = interaction_repo.create_interaction(
        session=session, user_id="U1", source="test", question=question, context=context
    )
    assert interaction.id is not None
    interaction_repo.record_answer(
        session=session, interaction_id=interaction.id, answer=answer, adapter_version="base", latency_ms=5
    )
    return interaction.id
