"""/v1 without a model server: credentials, the two served names, bounds, and failures that are still recorded.

No vLLM here (tests/serving/conftest.py points the engine at a port with nothing listening); the answers of the
real model, streamed and whole, are in test_openai_compat.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.serving.conftest import Callers

QUESTION = [{"role": "user", "content": "Where is the office?"}]


def client(callers: Callers, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{callers.url}/v1", api_key=token, max_retries=0)


def own_interactions(callers: Callers) -> list[dict[str, Any]]:
    interactions: list[dict[str, Any]] = callers.employee.get("/api/interactions").json()["interactions"]
    return interactions


def test_both_routes_need_the_api_token(callers: Callers) -> None:
    for headers in ({}, {"Authorization": "Bearer tl_not-a-real-token"}):
        models = httpx.get(f"{callers.url}/v1/models", headers=headers)
        chat = httpx.post(f"{callers.url}/v1/chat/completions", json={"messages": QUESTION}, headers=headers)
        for response in (models, chat):
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthenticated"
    with pytest.raises(openai.AuthenticationError):
        client(callers, "tl_not-a-real-token").models.list()
    assert own_interactions(callers) == []


def test_the_model_list_is_the_alias_and_the_base_model(callers: Callers) -> None:
    models = client(callers, callers.employee.token).models.list()
    assert [m.id for m in models] == ["tuneloop", callers.running.settings.serving.served_model_name]


@pytest.mark.parametrize("model", ["no-such-model", "tuneloop-v0001", "TUNELOOP", "tuneloop "])
def test_any_other_model_name_is_a_404_in_the_envelope(callers: Callers, model: str) -> None:
    response = callers.employee.post("/v1/chat/completions", json={"model": model, "messages": QUESTION})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert model in error["message"] and "/v1/models" in error["hint"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(callers, callers.employee.token).chat.completions.create(model=model, messages=QUESTION)  # type: ignore[arg-type]
    assert own_interactions(callers) == []


def test_a_candidates_served_name_is_not_served(callers: Callers) -> None:
    registry = callers.running.service.services.registry
    for version in ("v0001", "v0002"):
        name = registry.served_name(version)
        response = callers.admin.post("/v1/chat/completions", json={"model": name, "messages": QUESTION})
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] == "model_not_found"


def _too_many_turns(limit: int) -> list[dict[str, str]]:
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(limit + 1)]
    return [*turns, *QUESTION]


BOUNDS: dict[str, tuple[dict[str, Any], str]] = {
    "n over the bound": ({"n": 5}, "n"),
    "n zero": ({"n": 0}, "n"),
    "max_tokens over the bound": ({"max_tokens": 201}, "max_tokens"),
    "max_completion_tokens over the bound": ({"max_completion_tokens": 10_000}, "max_completion_tokens"),
    "max_tokens zero": ({"max_tokens": 0}, "max_tokens"),
    "temperature over 2": ({"temperature": 2.5}, "temperature"),
    "temperature negative": ({"temperature": -0.1}, "temperature"),
    "no messages": ({"messages": []}, "messages"),
    "a tool message": ({"messages": [{"role": "tool", "content": "x"}, *QUESTION]}, "messages.0"),
    "content that is not text": ({"messages": [{"role": "user", "content": {"a": 1}}]}, "messages.0"),
    "an image part": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages.0",
    ),
    "no user message": ({"messages": [{"role": "system", "content": "Be brief."}]}, "user message"),
    "too many turns": ({"messages": _too_many_turns(50)}, "turns"),
    "too many system messages": ({"messages": [{"role": "system", "content": "x"}] * 5 + QUESTION}, "system"),
    "an oversized earlier turn": ({"messages": [{"role": "assistant", "content": "x" * 4001}, *QUESTION]}, "limit"),
}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_out_of_bounds_requests_are_422_and_not_recorded(callers: Callers, name: str) -> None:
    fields, expected = BOUNDS[name]
    body = {"model": "tuneloop", "messages": QUESTION, **fields}

    response = callers.employee.post("/v1/chat/completions", json=body)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert expected in error["message"]
    assert own_interactions(callers) == []


def test_a_temperature_that_is_not_finite_is_422(callers: Callers) -> None:
    # Python's JSON (and so FastAPI's) reads NaN and Infinity; the bound must still hold.
    for value in ("NaN", "Infinity"):
        content = '{"messages": [{"role": "user", "content": "Hi"}], "temperature": ' + value + "}"
        response = callers.employee.post(
            "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, value


@pytest.mark.parametrize(("question", "expected"), [("   ", "empty"), ("x" * 40_000, "limit")])
def test_an_unusable_question_is_refused_and_recorded_bounded(callers: Callers, question: str, expected: str) -> None:
    body = {"model": "tuneloop", "messages": [{"role": "user", "content": question}]}

    response = callers.employee.post("/v1/chat/completions", json=body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_question" and expected in error["message"]
    stored = callers.employee.get(f"/api/interactions/{error['interaction_id']}").json()
    assert (stored["source"], stored["status"]) == ("openai", "failed")
    assert stored["question"] == question[: callers.running.settings.serving.max_question_chars]


@pytest.mark.parametrize("stream", [False, True])
def test_a_dead_model_server_is_a_503_and_the_interaction_is_recorded_failed(callers: Callers, stream: bool) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Where is"}, {"type": "text", "text": "the office?"}]},
    ]
    body = {"model": "tuneloop", "messages": messages, "stream": stream, "user": "U_ADMIN"}

    response = callers.employee.post("/v1/chat/completions", json=body)

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "engine_unavailable" and error["hint"]
    stored = callers.employee.get(f"/api/interactions/{error['interaction_id']}").json()
    assert stored["user_id"] == "U_EMPLOYEE"  # the token's user; the body's `user` is no identity
    assert stored["source"] == "openai"
    assert stored["question"] == "Where is\nthe office?"
    assert stored["context"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert stored["status"] == "failed" and "engine_unavailable" in stored["error"]
    with pytest.raises(openai.InternalServerError) as raised:
        client(callers, callers.employee.token).chat.completions.create(
            model="tuneloop",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=stream,
        )
    assert raised.value.status_code == 503
    assert "not reachable" in raised.value.message
    assert [i["status"] for i in own_interactions(callers)] == ["failed", "failed"]
