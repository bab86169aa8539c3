"""API tokens in the store: only the hash is kept, lookups find active tokens, revoking is immediate."""

from __future__ import annotations

from sqlalchemy import text

from store import tokens as repo


def test_a_token_is_stored_only_as_its_hash(session):
    issued = repo.create_token(session=session, user_id="U1", label="laptop")
    assert issued.token.startswith("tl_") and len(issued.token) > 40
    stored = session.exec(text("SELECT token_sha256, prefix FROM apitoken")).all()
    assert stored == [(repo.token_sha256(issued.token), issued.token[:10])]
    assert issued.token not in str(stored)


def test_lookup_finds_active_tokens_only(session):
    first = repo.create_token(session=session, user_id="U1")
    second = repo.create_token(session=session, user_id="U1")
    assert first.token != second.token
    found = repo.find_active_token(session=session, token=first.token)
    assert found is not None and found.user_id == "U1"
    assert repo.find_active_token(session=session, token=first.token + "x") is None
    assert repo.find_active_token(session=session, token="") is None
    assert first.row.id is not None
    repo.revoke_token(session=session, token_id=first.row.id)
    assert repo.find_active_token(session=session, token=first.token) is None
    assert repo.find_active_token(session=session, token=second.token) is not None


def test_list_filters_by_user_and_hides_revoked(session):
    a = repo.create_token(session=session, user_id="U1")
    repo.create_token(session=session, user_id="U2")
    assert a.row.id is not None
    repo.revoke_token(session=session, token_id=a.row.id)
    assert [t.user_id for t in repo.list_tokens(session=session)] == ["U2"]
    assert [t.user_id for t in repo.list_tokens(session=session, include_revoked=True)] == ["U1", "U2"]
    assert repo.list_tokens(session=session, user_id="U1") == []


def test_revoking_an_unknown_token_is_a_lookup_error(session):
    import pytest

    with pytest.raises(LookupError):
        repo.revoke_token(session=session, token_id=12345)


def test_touch_records_the_last_use(session):
    issued = repo.create_token(session=session, user_id="U1")
    assert issued.row.id is not None and issued.row.last_used_at is None
    repo.touch_token(session=session, token_id=issued.row.id)
    found = repo.find_active_token(session=session, token=issued.token)
    assert found is not None and found.last_used_at is not None
