"""Reviewers manage the memory of reviewed answers over HTTP: list, search, show, edit and retire entries.

A real service on SQLite and PostgreSQL with the real MiniLM embedder and no vLLM (tests/serving/conftest.py):
an employee's question is recorded although the engine is down, a reviewer's correction of it becomes an entry at
once, and a question the memory answers directly is answered without the engine.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from serving.access import Principal, Role
from serving.errors import Forbidden
from store import feedback as feedback_repo
from store.db import session_scope
from tests.serving.conftest import ADMIN, EMPLOYEE, REVIEWER, Callers

LAPTOP = "How do I get a new laptop?"
LAPTOP_ANSWER = "File a request in the #it-laptops channel; the IT desk ships laptops within five working days."
HOLIDAY = "How many days of paid holiday do I get?"
HOLIDAY_ANSWER = "Twenty-six days a year, plus public holidays; book them in the HR portal."


def remembered(callers: Callers, question: str, answer: str) -> tuple[int, int]:
    """An employee asks (recorded, though vLLM is down), a reviewer corrects: (entry id, correction id)."""
    asked = callers.employee.post("/api/ask", json={"question": question})
    assert asked.status_code == 503, asked.text
    interaction_id = asked.json()["error"]["interaction_id"]
    correction = callers.reviewer.post(f"/api/interactions/{interaction_id}/corrections", json={"text": answer})
    assert correction.json()["status"] == "approved", correction.text
    newest = callers.reviewer.get("/api/memory", params={"limit": 1}).json()["entries"][0]
    assert newest["answer"] == answer
    return newest["id"], correction.json()["correction_id"]


def audit_events(callers: Callers, **params: str) -> list[dict[str, Any]]:
    response = callers.admin.get("/admin/audit", params=params)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_reviewers_list_search_and_show_entries(callers: Callers) -> None:
    laptop, correction_id = remembered(callers, LAPTOP, LAPTOP_ANSWER)
    holiday, _ = remembered(callers, HOLIDAY, HOLIDAY_ANSWER)

    page = callers.reviewer.get("/api/memory").json()
    assert [(e["id"], e["question"], e["answer"], e["status"]) for e in page["entries"]] == [
        (holiday, HOLIDAY, HOLIDAY_ANSWER, "active"),
        (laptop, LAPTOP, LAPTOP_ANSWER, "active"),
    ]
    assert page["has_more"] is False and page["next_cursor"] is None
    first = callers.reviewer.get("/api/memory", params={"limit": 1}).json()
    assert [e["id"] for e in first["entries"]] == [holiday] and first["has_more"] is True
    rest = callers.reviewer.get("/api/memory", params={"limit": 1, "before": first["next_cursor"]}).json()
    assert [e["id"] for e in rest["entries"]] == [laptop] and rest["has_more"] is False

    found = callers.reviewer.get("/api/memory", params={"q": "What's the process to request a new laptop?"}).json()
    assert found["entries"][0]["id"] == laptop
    assert found["entries"][0]["similarity"] > 0.5
    assert [e["similarity"] for e in found["entries"]] == sorted(
        (e["similarity"] for e in found["entries"]), reverse=True
    )
    assert found["has_more"] is False and found["next_cursor"] is None

    shown = callers.reviewer.get(f"/api/memory/{laptop}").json()
    assert shown["wordings"] == [LAPTOP] and shown["question"] == LAPTOP
    assert (shown["approved_by"], shown["correction_id"], shown["status"]) == (REVIEWER, correction_id, "active")
    assert shown["approved_at"] and shown["retired_at"] is None
    assert shown["answers_using"] == 0
    # The very question again: the memory answers it as reviewed, without the (dead) engine.
    again = callers.employee.post("/api/ask", json={"question": LAPTOP})
    assert again.status_code == 200 and again.json()["memory"]["entry_id"] == laptop
    assert callers.reviewer.get(f"/api/memory/{laptop}").json()["answers_using"] == 1


def test_an_edit_is_served_at_once_approved_by_the_editor_and_audited_without_the_text(callers: Callers) -> None:
    entry, _ = remembered(callers, LAPTOP, LAPTOP_ANSWER)
    edited_text = "Order one in the IT portal under Hardware; it arrives within three working days."

    response = callers.admin.request("PATCH", f"/api/memory/{entry}", json={"answer": f"  {edited_text}\n"})

    assert response.status_code == 200, response.text
    edited = response.json()
    assert (edited["answer"], edited["approved_by"], edited["updated_by"]) == (edited_text, ADMIN, ADMIN)
    assert edited["approved_at"] > edited["created_at"]
    asked = callers.employee.post("/api/ask", json={"question": LAPTOP})
    assert asked.status_code == 200 and asked.json()["answer"] == edited_text
    (event,) = audit_events(callers, action="memory.edit")
    assert (event["actor"], event["source"], event["target"], event["outcome"]) == (
        ADMIN,
        "api",
        f"memory:{entry}",
        "ok",
    )
    assert event["detail"] == {"chars": len(edited_text), "previous_chars": len(LAPTOP_ANSWER)}
    everything = json.dumps(audit_events(callers))
    assert edited_text not in everything and LAPTOP_ANSWER not in everything


def test_a_retired_entry_is_no_longer_served_found_edited_or_retired_again(callers: Callers) -> None:
    entry, _ = remembered(callers, LAPTOP, LAPTOP_ANSWER)
    memory = callers.running.service.services.memory
    assert memory is not None and memory.recall(LAPTOP).best is not None

    response = callers.reviewer.post(f"/api/memory/{entry}/retire")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "retired" and response.json()["retired_at"]
    assert memory.recall(LAPTOP).hits == []
    assert callers.reviewer.get("/api/memory", params={"q": LAPTOP}).json()["entries"] == []
    assert callers.reviewer.get("/api/memory").json()["entries"] == []
    retired = callers.reviewer.get("/api/memory", params={"status": "retired"}).json()["entries"]
    assert [e["id"] for e in retired] == [entry]
    assert [e["id"] for e in callers.reviewer.get("/api/memory", params={"status": "all"}).json()["entries"]] == [entry]
    assert callers.employee.post("/api/ask", json={"question": LAPTOP}).status_code == 503  # back to the engine

    again = callers.reviewer.post(f"/api/memory/{entry}/retire")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict" and "already retired" in again.json()["error"]["hint"]
    edit = callers.reviewer.request("PATCH", f"/api/memory/{entry}", json={"answer": "Something new."})
    assert edit.status_code == 409
    assert "retired" in edit.json()["error"]["message"] and edit.json()["error"]["hint"]
    assert callers.reviewer.get(f"/api/memory/{entry}").json()["answer"] == LAPTOP_ANSWER

    events = [(e["actor"], e["action"], e["outcome"], e["target"]) for e in reversed(audit_events(callers))]
    assert events == [
        (REVIEWER, "memory.retire", "ok", f"memory:{entry}"),
        (REVIEWER, "memory.retire", "failed", f"memory:{entry}"),
        (REVIEWER, "memory.edit", "failed", f"memory:{entry}"),
    ]
    assert "Something new." not in json.dumps(audit_events(callers))


def test_unknown_ids_and_unusable_bodies_are_refused(callers: Callers) -> None:
    entry, _ = remembered(callers, LAPTOP, LAPTOP_ANSWER)
    for method, path, body in (
        ("GET", "/api/memory/999999", None),
        ("PATCH", "/api/memory/999999", {"answer": "Anything."}),
        ("POST", "/api/memory/999999/retire", None),
    ):
        response = callers.reviewer.request(method, path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["hint"]
    for body in ({"answer": ""}, {"answer": "  \n "}, {"answer": "x" * 8001}, {}, {"answer": "ok", "user": ADMIN}):
        response = callers.reviewer.request("PATCH", f"/api/memory/{entry}", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    assert callers.reviewer.request("PATCH", f"/api/memory/{entry}", json={"answer": "x" * 8000}).status_code == 200
    for params in ({"q": LAPTOP, "before": "5"}, {"q": LAPTOP, "status": "retired"}, {"status": "gone"}, {"q": ""}):
        response = callers.reviewer.get("/api/memory", params=params)
        assert response.status_code == 422, (params, response.text)
    assert callers.reviewer.get("/api/memory", params={"q": "   "}).json()["error"]["code"] == "invalid_question"


def test_employees_are_refused_and_the_refusal_is_audited(callers: Callers) -> None:
    entry, _ = remembered(callers, LAPTOP, LAPTOP_ANSWER)
    for method, path, body, action in (
        ("GET", "/api/memory", None, "memory.list"),
        ("GET", f"/api/memory/{entry}", None, "memory.show"),
        ("PATCH", f"/api/memory/{entry}", {"answer": "Buy one."}, "memory.edit"),
        ("POST", f"/api/memory/{entry}/retire", None, "memory.retire"),
    ):
        response = callers.employee.request(method, path, json=body)
        assert response.status_code == 403, path
        assert response.json()["error"]["hint"]
        (event,) = audit_events(callers, action=action)
        assert (event["actor"], event["outcome"], event["source"]) == (EMPLOYEE, "refused", "api")
    assert callers.reviewer.get(f"/api/memory/{entry}").json()["answer"] == LAPTOP_ANSWER


def test_slacks_app_home_edits_through_the_same_service_audited_as_slack(callers: Callers) -> None:
    entry, _ = remembered(callers, LAPTOP, LAPTOP_ANSWER)
    memory = callers.running.service.services.memory
    assert memory is not None
    employee = Principal(user_id=EMPLOYEE, role=Role.employee, via="slack")
    reviewer = Principal(user_id=REVIEWER, role=Role.reviewer, via="slack")

    with pytest.raises(Forbidden) as refused:
        memory.retire(entry, by=employee)
    assert refused.value.hint
    edited = memory.edit(entry, answer="Use the IT portal.", by=reviewer)
    assert edited.answer == "Use the IT portal." and edited.approved_by == REVIEWER
    retired = memory.retire(entry, by=reviewer)
    assert retired.status == "retired"

    events = [(e["actor"], e["source"], e["action"], e["outcome"]) for e in reversed(audit_events(callers))]
    assert events == [
        (EMPLOYEE, "slack", "memory.retire", "refused"),
        (REVIEWER, "slack", "memory.edit", "ok"),
        (REVIEWER, "slack", "memory.retire", "ok"),
    ]


# Built from pieces, so that secret scanners on this repository do not take the fake for a real one.
AWS_KEY = "AKIA" + "IOSFODNN7" + "EXAMPLE"


def test_an_edit_holding_a_credential_is_refused_and_the_entry_keeps_its_answer(callers: Callers) -> None:
    entry_id, _correction_id = remembered(callers, LAPTOP, LAPTOP_ANSWER)
    body = {"answer": f"Use the key {AWS_KEY} to order."}
    response = callers.reviewer.request("PATCH", f"/api/memory/{entry_id}", json=body)
    assert response.status_code == 422, response.text
    assert "looks like a secret (an AWS key)" in response.json()["error"]["message"]
    assert AWS_KEY not in response.text
    assert callers.reviewer.get(f"/api/memory/{entry_id}").json()["answer"] == LAPTOP_ANSWER


def test_a_pending_correction_holding_a_credential_cannot_be_approved_into_the_memory(callers: Callers) -> None:
    """One submitted before submissions were checked: the approval is refused, and nothing reaches the memory."""
    asked = callers.employee.post("/api/ask", json={"question": LAPTOP})
    interaction_id = asked.json()["error"]["interaction_id"]
    with session_scope(callers.running.service.services.engine) as session:
        pending = feedback_repo.create_correction(
            session=session,
            interaction_id=interaction_id,
            author_id=EMPLOYEE,
            text=f"Use the key {AWS_KEY} to order.",
            approved=False,
        )

    response = callers.reviewer.post(f"/api/corrections/{pending.id}/review", json={"decision": "approve"})

    assert response.status_code == 422, response.text
    assert callers.reviewer.get("/api/memory").json()["entries"] == []
    with session_scope(callers.running.service.services.engine) as session:
        stored = feedback_repo.get_correction(session=session, correction_id=pending.id or 0)
    assert stored is not None and stored.status == "pending"
