"""The API with a dead model server: every request gets a clear error, and nothing is lost.

No vLLM runs here on purpose: the engine URL points at a port with nothing listening (tests/serving/conftest.py).
Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import httpx
import pytest

from tests.serving.conftest import Callers


def test_healthz_reports_the_engine_down_and_nothing_about_the_host(callers: Callers) -> None:
    response = httpx.get(f"{callers.url}/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["engine"] == {"healthy": False}
    assert body["status"] in ("starting", "degraded")
    assert body["active_adapter"] == "base"
    assert "details" not in body
    text = response.text
    for secret in ("sqlite", "postgresql", "no-model", "127.0.0.1", str(callers.running.settings.data_dir)):
        assert secret not in text
    as_employee = callers.employee.get("/healthz").json()
    assert "details" not in as_employee
    as_admin = callers.admin.get("/healthz").json()
    assert as_admin["details"]["store"].startswith(("sqlite", "postgresql"))
    assert as_admin["engine"]["url"].startswith("http://127.0.0.1:")


def test_ask_with_dead_engine_is_a_clear_error_and_the_question_is_recorded(callers: Callers) -> None:
    response = callers.employee.post("/api/ask", json={"question": "Where is the office?"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "engine_unavailable"
    assert error["hint"]
    interaction = callers.employee.get(f"/api/interactions/{error['interaction_id']}").json()
    assert interaction["question"] == "Where is the office?"
    assert interaction["user_id"] == "U_EMPLOYEE"
    assert interaction["status"] == "failed"
    assert "engine_unavailable" in interaction["error"]


@pytest.mark.parametrize(("question", "expected"), [("", "empty"), ("   \n ", "empty"), ("x" * 40_000, "limit")])
def test_unusable_questions_are_refused_and_kept_bounded(callers: Callers, question: str, expected: str) -> None:
    response = callers.employee.post("/api/ask", json={"question": question})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_question"
    assert expected in error["message"]
    stored = callers.employee.get(f"/api/interactions/{error['interaction_id']}").json()
    limit = callers.running.settings.serving.max_question_chars
    assert stored["question"] == question[:limit]
    assert stored["status"] == "failed"


def test_malformed_requests_get_the_error_envelope(callers: Callers) -> None:
    response = callers.employee.post("/api/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    response = callers.employee.get("/api/interactions/999999")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def _interaction(callers: Callers) -> int:
    response = callers.employee.post("/api/ask", json={"question": "What is our VPN?"})
    return int(response.json()["error"]["interaction_id"])


def test_votes_replace_earlier_votes(callers: Callers) -> None:
    interaction_id = _interaction(callers)
    for vote in ("up", "down"):
        response = callers.employee.post(f"/api/interactions/{interaction_id}/feedback", json={"vote": vote})
        assert response.status_code == 200
        assert response.json() == {"interaction_id": interaction_id, "user": "U_EMPLOYEE", "vote": vote}
    status = callers.employee.get("/admin/status").json()
    assert status["new_feedback_since_last_training"] == 1
    bad = callers.employee.post(f"/api/interactions/{interaction_id}/feedback", json={"vote": "sideways"})
    assert bad.status_code == 422


def test_corrections_need_a_reviewer(callers: Callers) -> None:
    interaction_id = _interaction(callers)
    by_reviewer = callers.reviewer.post(
        f"/api/interactions/{interaction_id}/corrections", json={"text": "It is vpn.example.com."}
    ).json()
    assert by_reviewer["status"] == "approved"
    assert by_reviewer["author"] == "U_REVIEWER"
    by_employee = callers.employee.post(
        f"/api/interactions/{interaction_id}/corrections", json={"text": "It is corp-vpn."}
    ).json()
    assert by_employee["status"] == "pending"
    pending = callers.reviewer.get("/api/corrections").json()
    assert [c["correction_id"] for c in pending["corrections"]] == [by_employee["correction_id"]]
    assert pending["has_more"] is False

    refused = callers.employee.post(
        f"/api/corrections/{by_employee['correction_id']}/review", json={"decision": "approve"}
    )
    assert refused.status_code == 403
    approved = callers.reviewer.post(
        f"/api/corrections/{by_employee['correction_id']}/review", json={"decision": "approve"}
    )
    assert approved.json()["status"] == "approved"
    assert approved.json()["reviewer"] == "U_REVIEWER"
    again = callers.reviewer.post(
        f"/api/corrections/{by_employee['correction_id']}/review", json={"decision": "reject"}
    )
    assert again.status_code == 409
    empty = callers.reviewer.post(f"/api/interactions/{interaction_id}/corrections", json={"text": " "})
    assert empty.status_code == 422


def test_admin_actions_are_refused_for_non_admins_and_audited(callers: Callers) -> None:
    for path, body in (("/admin/promote", {"version": "base"}), ("/admin/rollback", {}), ("/admin/train", {})):
        response = callers.employee.post(path, json=body)
        assert response.status_code == 403, path
        assert "admin" in response.json()["error"]["message"]
    events = callers.admin.get("/admin/audit").json()["events"]
    assert sorted((e["action"], e["outcome"], e["actor"]) for e in events) == [
        ("promote", "refused", "U_EMPLOYEE"),
        ("retrain", "refused", "U_EMPLOYEE"),
        ("rollback", "refused", "U_EMPLOYEE"),
    ]
    nothing_earlier = callers.admin.post("/admin/rollback", json={})
    assert nothing_earlier.status_code == 409
    assert callers.admin.get("/admin/audit").json()["events"][0]["outcome"] == "failed"


def test_a_cycle_with_nothing_to_learn_is_skipped(callers: Callers) -> None:
    run_id = callers.admin.post("/admin/train", json={}).json()["run_id"]
    run = callers.admin.get(f"/admin/runs/{run_id}", params={"wait": 30}).json()
    assert run["status"] == "skipped"
    assert "nothing to train" in run["error"]
