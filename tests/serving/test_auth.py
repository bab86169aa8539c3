"""Credentials on every route: no token 401, the wrong role 403 (audited), and no identity taken from a body.

Runs against the real app over HTTP with real tokens in the real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from serving.access import Role
from store import tokens as token_repo
from store.db import session_scope
from tests.conftest import ApiCaller, RunningService
from tests.serving.conftest import Callers, dead_engine_settings
from tuneloop.service import access_policy

# Every route of the API, with a body that would be valid, and the least role that may call it.
ROUTES: list[tuple[str, str, dict[str, Any] | None, Role]] = [
    ("POST", "/api/ask", {"question": "Where is the office?"}, Role.employee),
    ("GET", "/api/interactions", None, Role.employee),
    ("GET", "/api/interactions/{interaction_id}", None, Role.employee),
    ("POST", "/api/interactions/{interaction_id}/feedback", {"vote": "up"}, Role.employee),
    ("POST", "/api/interactions/{interaction_id}/corrections", {"text": "It is on floor 3."}, Role.employee),
    ("GET", "/api/corrections", None, Role.reviewer),
    ("POST", "/api/corrections/{correction_id}/review", {"decision": "approve"}, Role.reviewer),
    ("GET", "/api/memory", None, Role.reviewer),
    ("GET", "/api/memory/{entry_id}", None, Role.reviewer),
    ("PATCH", "/api/memory/{entry_id}", {"answer": "It is on floor 3."}, Role.reviewer),
    ("POST", "/api/memory/{entry_id}/retire", None, Role.reviewer),
    ("POST", "/admin/train", {}, Role.admin),
    ("GET", "/admin/runs", None, Role.admin),
    ("GET", "/admin/runs/{run_id}", None, Role.admin),
    ("GET", "/admin/adapters", None, Role.admin),
    ("GET", "/admin/status", None, Role.employee),
    ("POST", "/admin/promote", {"version": "base"}, Role.admin),
    ("POST", "/admin/rollback", {}, Role.admin),
    ("POST", "/admin/adapters/import", {"path": "/nowhere"}, Role.admin),
    ("GET", "/admin/audit", None, Role.admin),
    ("GET", "/admin/dataset", None, Role.admin),
    ("GET", "/metrics", None, Role.admin),
    ("GET", "/metrics/vllm", None, Role.admin),
    ("GET", "/v1/models", None, Role.employee),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "tuneloop", "messages": [{"role": "user", "content": "Hi"}]},
        Role.employee,
    ),
]
OPEN_ROUTES = {("GET", "/healthz")}


def _path(template: str) -> str:
    return template.format(interaction_id=1, correction_id=1, run_id=1, entry_id=1)


def test_the_table_covers_every_route_of_the_app(callers: Callers) -> None:
    app = callers.running.service.app
    # The dashboard answers with pages and sign-in redirects, not the envelope: tests/serving/test_ui_routes.py.
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and not route.path.startswith("/ui")
        for method in route.methods
    }
    assert served - OPEN_ROUTES == {(method, path) for method, path, _, _ in ROUTES}


@pytest.mark.parametrize(("method", "path", "body", "_role"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_no_credential_is_401_in_the_envelope(
    callers: Callers, method: str, path: str, body: dict[str, Any] | None, _role: Role
) -> None:
    for headers in ({}, {"Authorization": "Bearer tl_not-a-real-token"}, {"Authorization": "Basic dTpw"}):
        response = httpx.request(method, callers.url + _path(path), json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.json()["error"]["hint"]
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_stops_working_at_once(callers: Callers) -> None:
    assert callers.employee.get("/api/interactions").status_code == 200
    with session_scope(callers.running.service.services.engine) as session:
        (row,) = token_repo.list_tokens(session=session, user_id="U_EMPLOYEE")
        assert row.id is not None
        token_repo.revoke_token(session=session, token_id=row.id)
    response = callers.employee.get("/api/interactions")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "role"),
    [route for route in ROUTES if route[3] > Role.employee],
    ids=[f"{m} {p}" for m, p, _, r in ROUTES if r > Role.employee],
)
def test_the_wrong_role_is_403_and_the_refusal_is_audited(
    callers: Callers, method: str, path: str, body: dict[str, Any] | None, role: Role
) -> None:
    too_low = [callers.employee] if role is Role.reviewer else [callers.employee, callers.reviewer]
    for caller in too_low:
        response = caller.request(method, _path(path), json=body)
        assert response.status_code == 403, (caller.user_id, response.text)
        error = response.json()["error"]
        assert error["code"] == "forbidden"
        assert role.name in error["message"]
    refusals = callers.admin.get("/admin/audit", params={"outcome": "refused"}).json()["events"]
    assert sorted(e["actor"] for e in refusals) == sorted(c.user_id for c in too_low)
    assert all(e["source"] == "api" for e in refusals)


def test_an_identity_named_in_a_body_changes_nothing(callers: Callers) -> None:
    # An employee names an admin in the body: refused for the role, the admin is not acted for.
    response = callers.employee.post("/admin/promote", json={"user": "U_ADMIN", "version": "base"})
    assert response.status_code == 403
    # With the right role, an unknown `user` field is an error, never an identity.
    response = callers.admin.post("/admin/promote", json={"user": "U_SOMEONE", "version": "base"})
    assert response.status_code == 422
    assert "user" in response.json()["error"]["message"]
    response = callers.employee.post("/api/ask", json={"question": "Who am I?", "user": "U_ADMIN"})
    assert response.status_code == 422
    asked = callers.employee.post("/api/ask", json={"question": "Who am I?"}).json()["error"]["interaction_id"]
    assert callers.employee.get(f"/api/interactions/{asked}").json()["user_id"] == "U_EMPLOYEE"
    events = callers.admin.get("/admin/audit").json()["events"]
    assert [(e["actor"], e["action"], e["outcome"]) for e in events] == [("U_EMPLOYEE", "promote", "refused")]


def test_employees_read_and_act_only_on_their_own_interactions(
    callers: Callers, dead_engine_service: RunningService
) -> None:
    other = ApiCaller(dead_engine_service, "U_OTHER")
    try:
        mine = callers.employee.post("/api/ask", json={"question": "My question"}).json()["error"]["interaction_id"]
        theirs = other.post("/api/ask", json={"question": "Their question"}).json()["error"]["interaction_id"]
        assert callers.employee.get(f"/api/interactions/{mine}").status_code == 200
        for method, path, body in (
            ("GET", f"/api/interactions/{theirs}", None),
            ("POST", f"/api/interactions/{theirs}/feedback", {"vote": "down"}),
            ("POST", f"/api/interactions/{theirs}/corrections", {"text": "Something else."}),
        ):
            response = callers.employee.request(method, path, json=body)
            assert response.status_code == 404, path
        listed = callers.employee.get("/api/interactions").json()["interactions"]
        assert [i["id"] for i in listed] == [mine]
        everyone = callers.reviewer.get("/api/interactions").json()["interactions"]
        assert {i["id"] for i in everyone} == {mine, theirs}
        just_theirs = callers.reviewer.get("/api/interactions", params={"user": "U_OTHER"}).json()["interactions"]
        assert [i["id"] for i in just_theirs] == [theirs]
        assert callers.reviewer.get(f"/api/interactions/{theirs}").json()["question"] == "Their question"
    finally:
        other.close()


def test_with_no_admins_admin_actions_are_refused_with_a_hint(tmp_path: Path, store_url: str | None) -> None:
    settings = dead_engine_settings(tmp_path, store_url, access={"admins": [], "reviewers": []})
    running = RunningService(settings).start(wait_ready=False)
    caller = ApiCaller(running, "U_ANYONE")
    try:
        response = caller.post("/admin/promote", json={"version": "base"})
        assert response.status_code == 403
        assert "TUNELOOP_ACCESS__ADMINS" in response.json()["error"]["hint"]
        assert "tuneloop token create" in response.json()["error"]["hint"]
        assert caller.get("/admin/status").json()["access"] == "no admins"
    finally:
        caller.close()
        running.stop()


def test_the_laptop_opt_in_opens_admin_actions_only_on_loopback(tmp_path: Path) -> None:
    def policy(host: str, **access: object):  # type: ignore[no-untyped-def]
        settings = dead_engine_settings(tmp_path, None, access={"admins": [], **access}, serving={"host": host})
        return access_policy(settings)

    assert policy("127.0.0.1").role_of("anyone") is Role.employee
    assert policy("127.0.0.1", open_on_loopback=True).role_of("anyone") is Role.admin
    assert policy("0.0.0.0", open_on_loopback=True).role_of("anyone") is Role.employee
    assert policy("10.1.2.3", open_on_loopback=True, admins=["U_ADMIN"]).role_of("U_ADMIN") is Role.admin
    # Named admins close the opt-in: only they administer.
    assert policy("127.0.0.1", open_on_loopback=True, admins=["U_ADMIN"]).role_of("anyone") is Role.employee


def test_open_mode_over_http_still_needs_a_credential(tmp_path: Path) -> None:
    settings = dead_engine_settings(tmp_path, None, access={"admins": [], "open_on_loopback": True})
    running = RunningService(settings).start(wait_ready=False)
    caller = ApiCaller(running, "U_LAPTOP")
    try:
        assert httpx.get(f"{running.url}/admin/audit").status_code == 401
        assert caller.get("/admin/audit").status_code == 200
        assert caller.get("/admin/status").json()["access"] == "open"
    finally:
        caller.close()
        running.stop()


def test_the_schema_declares_the_bearer_token_for_docs(callers: Callers) -> None:
    schema = httpx.get(f"{callers.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    ask = schema["paths"]["/api/ask"]["post"]
    assert ask["security"] == [{"HTTPBearer": []}]
    assert "/healthz" in schema["paths"] and "security" not in schema["paths"]["/healthz"]["get"]
