"""The API with a dead model server: every request gets a clear error, and nothing is lost.

No vLLM runs here on purpose: the engine URL points at a port with nothing listening.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningService, free_port, make_settings


@pytest.fixture
def dead_engine_service(tmp_path: Path) -> Iterator[RunningService]:
    settings = make_settings(tmp_path, base_model_dir=tmp_path / "no-model", vllm_url=f"http://127.0.0.1:{free_port()}")
    running = RunningService(settings).start(wait_ready=False)
    yield running
    running.stop()


def test_healthz_reports_the_engine_down(dead_engine_service: RunningService) -> None:
    response = httpx.get(f"{dead_engine_service.url}/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["engine"]["healthy"] is False
    assert body["status"] in ("starting", "degraded")
    assert body["active_adapter"] == "base"


def test_ask_with_dead_engine_is_a_clear_error_and_the_question_is_recorded(
    dead_engine_service: RunningService,
) -> None:
    url = dead_engine_service.url
    response = httpx.post(f"{url}/api/ask", json={"question": "Where is the office?", "user": "U1"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "engine_unavailable"
    assert error["hint"]
    interaction = httpx.get(f"{url}/api/interactions/{error['interaction_id']}").json()
    assert interaction["question"] == "Where is the office?"
    assert interaction["status"] == "failed"
    assert "engine_unavailable" in interaction["error"]


@pytest.mark.parametrize(("question", "expected"), [("", "empty"), ("   \n ", "empty"), ("x" * 40_000, "limit")])
def test_unusable_questions_are_refused_and_kept_whole(
    dead_engine_service: RunningService, question: str, expected: str
) -> None:
    url = dead_engine_service.url
    response = httpx.post(f"{url}/api/ask", json={"question": question, "user": "U1"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_question"
    assert expected in error["message"]
    stored = httpx.get(f"{url}/api/interactions/{error['interaction_id']}").json()
    assert stored["question"] == question
    assert stored["status"] == "failed"


def test_malformed_requests_get_the_error_envelope(dead_engine_service: RunningService) -> None:
    url = dead_engine_service.url
    response = httpx.post(f"{url}/api/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "tuneloop"})
    assert response.status_code == 422
    assert "messages" in response.json()["error"]["message"]
    response = httpx.get(f"{url}/api/interactions/999999")
    assert response.status_code == 404


def _interaction(url: str) -> int:
    response = httpx.post(f"{url}/api/ask", json={"question": "What is our VPN?", "user": "U1"})
    return int(response.json()["error"]["interaction_id"])


def test_votes_replace_earlier_votes(dead_engine_service: RunningService) -> None:
    url = dead_engine_service.url
    interaction_id = _interaction(url)
    for vote in ("up", "down"):
        response = httpx.post(f"{url}/api/interactions/{interaction_id}/feedback", json={"user": "U2", "vote": vote})
        assert response.status_code == 200
    status = httpx.get(f"{url}/admin/status").json()
    assert status["new_feedback_since_last_training"] == 1
    bad = httpx.post(f"{url}/api/interactions/{interaction_id}/feedback", json={"user": "U2", "vote": "sideways"})
    assert bad.status_code == 422


def test_corrections_need_a_reviewer(dead_engine_service: RunningService) -> None:
    url = dead_engine_service.url
    interaction_id = _interaction(url)
    by_reviewer = httpx.post(
        f"{url}/api/interactions/{interaction_id}/corrections",
        json={"user": "U_REVIEWER", "text": "It is vpn.example.com."},
    ).json()
    assert by_reviewer["status"] == "approved"
    by_employee = httpx.post(
        f"{url}/api/interactions/{interaction_id}/corrections", json={"user": "U_EMPLOYEE", "text": "It is corp-vpn."}
    ).json()
    assert by_employee["status"] == "pending"
    pending = httpx.get(f"{url}/api/corrections").json()["corrections"]
    assert [c["correction_id"] for c in pending] == [by_employee["correction_id"]]

    refused = httpx.post(
        f"{url}/api/corrections/{by_employee['correction_id']}/review",
        json={"user": "U_EMPLOYEE", "decision": "approve"},
    )
    assert refused.status_code == 403
    approved = httpx.post(
        f"{url}/api/corrections/{by_employee['correction_id']}/review",
        json={"user": "U_REVIEWER", "decision": "approve"},
    )
    assert approved.json()["status"] == "approved"
    again = httpx.post(
        f"{url}/api/corrections/{by_employee['correction_id']}/review",
        json={"user": "U_REVIEWER", "decision": "reject"},
    )
    assert again.status_code == 409
    empty = httpx.post(f"{url}/api/interactions/{interaction_id}/corrections", json={"user": "U_REVIEWER", "text": " "})
    assert empty.status_code == 422


def test_admin_actions_are_refused_for_non_admins_and_audited(dead_engine_service: RunningService) -> None:
    url = dead_engine_service.url
    for path, body in (("/admin/promote", {"version": "base"}), ("/admin/rollback", {}), ("/admin/train", {})):
        response = httpx.post(f"{url}{path}", json={"user": "U_EMPLOYEE", **body})
        assert response.status_code == 403, path
        assert "admin" in response.json()["error"]["message"]
    events = httpx.get(f"{url}/admin/audit").json()["events"]
    assert sorted((e["action"], e["outcome"], e["actor"]) for e in events) == [
        ("promote", "refused", "U_EMPLOYEE"),
        ("retrain", "refused", "U_EMPLOYEE"),
        ("rollback", "refused", "U_EMPLOYEE"),
    ]
    nothing_earlier = httpx.post(f"{url}/admin/rollback", json={"user": "U_ADMIN"})
    assert nothing_earlier.status_code == 409
    assert httpx.get(f"{url}/admin/audit").json()["events"][0]["outcome"] == "failed"


def test_a_cycle_with_nothing_to_learn_is_skipped(dead_engine_service: RunningService) -> None:
    url = dead_engine_service.url
    run_id = httpx.post(f"{url}/admin/train", json={"user": "U_ADMIN"}).json()["run_id"]
    run = httpx.get(f"{url}/admin/runs/{run_id}", params={"wait": 30}, timeout=40).json()
    assert run["status"] == "skipped"
    assert "nothing to train" in run["error"]
