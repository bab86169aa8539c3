"""GET /metrics: Prometheus text for admins, counting what the real service does (SQLite and PostgreSQL).

The service runs with no vLLM (tests/serving/conftest.py): a question fails with engine_unavailable and is still
recorded, feedback works, and a question the memory answers directly is answered without the engine. The
exposition is parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.client import InferenceClient
from serving.errors import EngineRejected
from store import feedback as feedback_repo
from store.db import session_scope
from tests.conftest import ApiCaller, RunningService
from tests.serving.conftest import Callers
from tests.serving.test_memory_api import LAPTOP, LAPTOP_ANSWER, remembered

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# Questions, answers and user ids never become labels: only these do.
ALLOWED_LABELS = {"version", "memory", "code", "mode", "direction", "outcome", "stage", "status", "le"}


def scrape(admin: ApiCaller) -> Samples:
    response = admin.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(admin: ApiCaller, holds: Callable[[Samples], bool], *, timeout_s: float = 15) -> Samples:
    """The first scrape for which `holds` is true: for what the service counts after it has answered."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(admin)
        if holds(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)  # polling the scrape, as Prometheus would


def failed_ask(callers: Callers, question: str = "Where is the office?") -> int:
    response = callers.employee.post("/api/ask", json={"question": question})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "engine_unavailable"
    interaction_id: int = response.json()["error"]["interaction_id"]
    return interaction_id


def test_metrics_are_for_admins_only(callers: Callers) -> None:
    for path in ("/metrics", "/metrics/vllm"):
        assert httpx.get(callers.url + path).status_code == 401
        for caller in (callers.employee, callers.reviewer):
            response = caller.get(path)
            assert response.status_code == 403, (caller.user_id, response.text)
            assert response.json()["error"]["code"] == "forbidden"

    samples = scrape(callers.admin)

    assert value(samples, "tuneloop_active_version_info", version="base") == 1
    assert value(samples, "tuneloop_store_up") == 1
    assert value(samples, "tuneloop_corrections_pending") == 0
    assert value(samples, "tuneloop_memory_entries", status="active") == 0


def test_a_failed_answer_is_counted_by_its_code_and_the_engine_is_down(callers: Callers) -> None:
    before = scrape(callers.admin)
    assert value(before, "tuneloop_answers_failed_total", code="engine_unavailable") == 0

    failed_ask(callers)

    after = eventually(callers.admin, lambda s: value(s, "tuneloop_engine_restarts_total") >= 1)
    assert value(after, "tuneloop_answers_failed_total", code="engine_unavailable") == 1
    assert value(after, "tuneloop_engine_up") == 0
    assert value(after, "tuneloop_engine_restarts_total") >= 1  # the keeper found no vLLM and tries again
    assert not [name for name, _ in after if name == "tuneloop_answers_total"]


def test_vllm_metrics_while_it_is_down_are_a_503(callers: Callers) -> None:
    response = callers.admin.get("/metrics/vllm")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "engine_unavailable"


def test_votes_are_counted_by_version_and_direction(callers: Callers) -> None:
    interaction_id = failed_ask(callers)

    voted = callers.employee.post(f"/api/interactions/{interaction_id}/feedback", json={"vote": "down"})
    assert voted.status_code == 200, voted.text
    samples = scrape(callers.admin)

    # The failed interaction has no adapter version.
    assert value(samples, "tuneloop_votes_total", version="none", direction="down") == 1
    assert value(samples, "tuneloop_votes_total", version="none", direction="up") == 0


def test_the_pending_gauge_follows_the_store_and_reviews_are_counted(callers: Callers) -> None:
    interaction_id = failed_ask(callers)
    submitted = callers.employee.post(f"/api/interactions/{interaction_id}/corrections", json={"text": "Floor 3."})
    assert submitted.json()["status"] == "pending", submitted.text

    samples = scrape(callers.admin)
    assert value(samples, "tuneloop_corrections_pending") == 1
    assert value(samples, "tuneloop_corrections_submitted_total") == 1
    assert value(samples, "tuneloop_corrections_approved_total") == 0

    correction_id = submitted.json()["correction_id"]
    reviewed = callers.reviewer.post(f"/api/corrections/{correction_id}/review", json={"decision": "reject"})
    assert reviewed.status_code == 200, reviewed.text
    samples = scrape(callers.admin)
    assert value(samples, "tuneloop_corrections_pending") == 0
    assert value(samples, "tuneloop_corrections_rejected_total") == 1

    # Read from the store at scrape time: a pending correction written by another process counts too.
    with session_scope(callers.running.service.services.engine) as session:
        feedback_repo.create_correction(
            session=session, interaction_id=interaction_id, author_id="U_ELSEWHERE", text="Floor 4.", approved=False
        )
    assert value(scrape(callers.admin), "tuneloop_corrections_pending") == 1


def test_a_direct_answer_from_the_memory_is_a_hit_and_an_answer_of_its_version(callers: Callers) -> None:
    entry_id, _ = remembered(callers, LAPTOP, LAPTOP_ANSWER)
    before = scrape(callers.admin)
    assert value(before, "tuneloop_corrections_approved_total") == 1
    assert value(before, "tuneloop_memory_entries", status="active") == 1

    asked = callers.employee.post("/api/ask", json={"question": LAPTOP})

    assert asked.status_code == 200 and asked.json()["memory"]["entry_id"] == entry_id
    after = scrape(callers.admin)
    direct = {"version": "base", "memory": "direct"}
    assert value(after, "tuneloop_memory_hits_total", mode="direct") == 1
    assert value(after, "tuneloop_answers_total", **direct) == 1
    assert value(after, "tuneloop_answer_seconds_count", **direct) == 1
    assert value(after, "tuneloop_answer_first_text_seconds_count", **direct) == 1
    assert value(after, "tuneloop_answer_characters_total", version="base") == len(LAPTOP_ANSWER)
    assert {name for _, labels in after for name, _ in labels} <= ALLOWED_LABELS
    label_values = {label_value for _, labels in after for _, label_value in labels}
    assert not label_values & {LAPTOP, LAPTOP_ANSWER, callers.employee.user_id, callers.reviewer.user_id}


def test_a_finished_cycle_is_counted_by_outcome(callers: Callers) -> None:
    started = callers.admin.post("/admin/train", json={})
    assert started.status_code == 202, started.text
    run = callers.admin.get(f"/admin/runs/{started.json()['run_id']}", params={"wait": 30}).json()
    assert run["status"] == "skipped", run  # nothing to train on yet

    samples = eventually(callers.admin, lambda s: value(s, "tuneloop_cycle_runs_total", outcome="skipped") == 1)

    assert value(samples, "tuneloop_cycle_runs_total", outcome="skipped") == 1
    assert value(samples, "tuneloop_cycle_stage_seconds_count", stage="training") == 0  # it never trained


async def test_the_client_relays_vllm_metrics_and_refuses_its_errors() -> None:
    def vllm(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/metrics":
            return httpx.Response(404)
        return httpx.Response(200, text="vllm:num_requests_running 0.0\n", headers={"content-type": "text/plain"})

    client = InferenceClient("http://vllm.test", transport=httpx.MockTransport(vllm))
    assert (await client.metrics()).text == "vllm:num_requests_running 0.0\n"
    await client.aclose()

    broken = InferenceClient("http://vllm.test", transport=httpx.MockTransport(lambda _r: httpx.Response(500)))
    with pytest.raises(EngineRejected):
        await broken.metrics()
    await broken.aclose()


@pytest.mark.slow
def test_a_streamed_answer_of_the_real_model_is_timed_and_vllm_metrics_are_relayed(service: RunningService) -> None:
    admin = ApiCaller(service, "U_ADMIN")
    try:
        client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=admin.token, max_retries=0)
        stream = client.chat.completions.create(
            model="tuneloop", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text

        none = {"version": "base", "memory": "none"}
        samples = eventually(admin, lambda s: value(s, "tuneloop_answers_total", **none) == 1)
        assert value(samples, "tuneloop_answers_total", **none) == 1
        assert value(samples, "tuneloop_answer_first_text_seconds_count", **none) == 1
        assert value(samples, "tuneloop_answer_first_text_seconds_sum", **none) <= value(
            samples, "tuneloop_answer_seconds_sum", **none
        )
        assert value(samples, "tuneloop_engine_up") == 1

        relayed = admin.get("/metrics/vllm")
        assert relayed.status_code == 200, relayed.text
        names = {family.name for family in text_string_to_metric_families(relayed.text)}
        assert any(name.startswith("vllm:") for name in names), sorted(names)[:10]
    finally:
        admin.close()
