"""What the web dashboard reads and keeps in the store, on SQLite and PostgreSQL: answers per day, votes per
version, corrections of a page of interactions, the text search, and dashboard sessions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import tokens as token_repo
from store import ui_sessions as session_repo
from store.models import Interaction


def _answered(session, *, question: str, version: str, when: datetime, user: str = "U1") -> int:
    row = interaction_repo.create_interaction(session=session, user_id=user, source="api", question=question)
    assert row.id is not None
    interaction_repo.record_answer(
        session=session, interaction_id=row.id, answer=f"answer to {question}", adapter_version=version, latency_ms=5
    )
    stored = session.get(Interaction, row.id)
    stored.created_at = when
    session.add(stored)
    session.commit()
    return row.id


def test_answers_per_day_and_votes_per_version(session) -> None:
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    ids = [
        _answered(session, question="a", version="base", when=today - timedelta(days=2)),
        _answered(session, question="b", version="v0001", when=today - timedelta(days=2, hours=1)),
        _answered(session, question="c", version="v0001", when=today),
        _answered(session, question="old", version="v0001", when=today - timedelta(days=40)),
    ]
    failed = interaction_repo.create_interaction(session=session, user_id="U1", source="api", question="down")
    interaction_repo.record_failure(session=session, interaction_id=failed.id, error="engine", latency_ms=1)
    since = today - timedelta(days=13)
    assert interaction_repo.answers_per_day(session=session, since=since) == [
        ((today - timedelta(days=2)).date(), 2),
        (today.date(), 1),
    ]
    for interaction_id, voter, vote in ((ids[0], "R1", 1), (ids[1], "R1", -1), (ids[2], "R1", 1), (ids[2], "R2", 1)):
        feedback_repo.record_vote(session=session, interaction_id=interaction_id, user_id=voter, vote=vote)
    assert feedback_repo.vote_totals_by_version(session=session) == {"base": (1, 0), "v0001": (2, 1)}
    assert feedback_repo.vote_totals(session=session, interaction_ids=[ids[2]]) == {ids[2]: (2, 0)}
    assert isinstance(interaction_repo.answers_per_day(session=session, since=since)[0][0], date)


def test_corrections_of_a_page_and_the_text_search(session) -> None:
    now = datetime.now(UTC)
    vpn = _answered(session, question="Where is the VPN config?", version="base", when=now)
    odd = _answered(session, question="Is 100% of 5_000 a lot?", version="base", when=now, user="U2")
    other = _answered(session, question="Lunch?", version="base", when=now)
    first = feedback_repo.create_correction(
        session=session, interaction_id=vpn, author_id="U1", text="vpn.example.com", approved=False
    )
    second = feedback_repo.create_correction(
        session=session, interaction_id=vpn, author_id="R1", text="vpn.example.com/cfg", approved=True
    )
    found = feedback_repo.corrections_of(session=session, interaction_ids=[vpn, other])
    assert {k: [c.id for c in v] for k, v in found.items()} == {vpn: [first.id, second.id]}
    assert feedback_repo.corrections_of(session=session, interaction_ids=[]) == {}

    def search(text: str, user: str | None = None) -> list[int]:
        page = interaction_repo.page_interactions(session=session, limit=10, contains=text, user_id=user)
        return [row.id for row in page.items]

    assert search("vpn") == [vpn]  # case-insensitive, in the question
    assert search("ANSWER TO LUNCH") == [other]  # in the answer
    assert search("100%") == [odd]
    assert search("5_0") == [odd]
    assert search("%") == [odd]  # a wildcard is a character, not everything
    assert search("_") == [odd]
    assert search("vpn", user="U2") == []


def test_dashboard_sessions_end_on_expiry_sign_out_and_revocation(session) -> None:
    issued = token_repo.create_token(session=session, user_id="U1")
    token_id = issued.row.id
    opened = session_repo.open_session(session=session, user_id="U1", token_id=token_id, lifetime=timedelta(hours=1))
    assert opened.key not in (opened.row.key_sha256, issued.token)
    found = session_repo.find_live_session(session=session, key=opened.key)
    assert found is not None and found.user_id == "U1" and found.csrf_token == opened.row.csrf_token
    assert session_repo.find_live_session(session=session, key=opened.key + "x") is None
    later = datetime.now(UTC) + timedelta(hours=2)
    assert session_repo.find_live_session(session=session, key=opened.key, now=later) is None
    session_repo.close_session(session=session, key=opened.key)
    assert session_repo.find_live_session(session=session, key=opened.key) is None
    again = session_repo.open_session(session=session, user_id="U1", token_id=token_id, lifetime=timedelta(hours=1))
    token_repo.revoke_token(session=session, token_id=token_id)
    assert session_repo.find_live_session(session=session, key=again.key) is None


@pytest.mark.parametrize("stale_hours", [0, 3])
def test_opening_a_session_prunes_expired_ones(session, stale_hours: int) -> None:
    token_id = token_repo.create_token(session=session, user_id="U1").row.id
    old = session_repo.open_session(
        session=session, user_id="U1", token_id=token_id, lifetime=timedelta(hours=-stale_hours or 1)
    )
    session_repo.open_session(session=session, user_id="U1", token_id=token_id, lifetime=timedelta(hours=1))
    still = session_repo.find_live_session(session=session, key=old.key)
    assert (still is None) == (stale_hours > 0)
