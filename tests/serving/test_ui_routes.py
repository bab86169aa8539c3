"""The dashboard's routes over real HTTP, on SQLite and PostgreSQL: sign-in and its cookie, roles on every page
and action (refusals audited), CSRF, what an employee may see, and that actions go through the API's services.

No vLLM: a stand-in answers health and adapter loads (tests/serving/ui_support.py). The browser tests are in
test_ui_browser.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from store import audit as audit_repo
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import runs as run_repo
from store import tokens as token_repo
from store.db import session_scope
from tests.conftest import RunningService, issue_token, make_settings
from tests.serving.ui_support import (
    ADMIN,
    EMPLOYEE,
    REVIEWER,
    csrf_of,
    finish_run,
    model_server_stand_in,
    seed,
    signed_in_client,
    start_running_run,
)

# Every dashboard route and the least role that may use it.
PAGES = {
    "/ui": "employee",
    "/ui/feedback": "employee",
    "/ui/review": "reviewer",
    "/ui/versions": "admin",
    "/ui/audit": "admin",
    "/ui/progress.json": "admin",
}
ACTIONS = {
    "/ui/review/{id}": "reviewer",
    "/ui/memory/{id}/edit": "reviewer",
    "/ui/memory/{id}/retire": "reviewer",
    "/ui/versions/promote": "admin",
    "/ui/versions/rollback": "admin",
    "/ui/versions/train": "admin",
    "/ui/signout": "employee",
}
OPEN = {("GET", "/ui/signin"), ("POST", "/ui/signin")}
RANK = {"employee": 1, "reviewer": 2, "admin": 3}


class Dashboard:
    def __init__(self, running: RunningService, ids: dict[str, Any]) -> None:
        self.running = running
        self.ids = ids
        self.url = running.url
        self.engine = running.service.services.engine
        self._clients: list[httpx.Client] = []

    def client(self, user: str) -> httpx.Client:
        made = signed_in_client(self.url, issue_token(self.running, user))
        self._clients.append(made)
        return made

    def audit(self) -> list[tuple[str, str, str, str, str | None]]:
        with session_scope(self.engine) as session:
            return [(e.actor, e.source, e.action, e.outcome, e.target) for e in audit_repo.list_audit(session=session)]

    def close(self) -> None:
        for made in self._clients:
            made.close()


@pytest.fixture
def dashboard(tmp_path: Path, store_url: str | None) -> Iterator[Dashboard]:
    with model_server_stand_in() as url:
        settings = make_settings(
            tmp_path,
            base_model_dir=tmp_path / "no-model",
            vllm_url=url,
            **({"store": {"url": store_url}} if store_url else {}),
        )
        running = RunningService(settings)
        ids = seed(running.service.services.engine, tmp_path / "adapters")
        running.start()
        made = Dashboard(running, ids)
        yield made
        made.close()
        running.stop()


def _post(client: httpx.Client, path: str, data: dict[str, str] | None = None, *, page: str = "/ui") -> httpx.Response:
    """A form post with the session's CSRF token, taken from a page as the browser would."""
    token = csrf_of(client.get(page).text)
    return client.post(path, data={"csrf": token, **(data or {})})


def test_the_tables_cover_every_dashboard_route(dashboard: Dashboard) -> None:
    app = dashboard.running.service.app
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/ui")
        for method in route.methods
    }
    listed = (
        {("GET", p) for p in PAGES}
        | {("GET", "/ui/")}
        | {("POST", p.replace("{id}", "{correction_id}")) for p in ACTIONS if p.startswith("/ui/review")}
        | {("POST", p.replace("{id}", "{entry_id}")) for p in ACTIONS if p.startswith("/ui/memory")}
        | {("POST", p) for p in ACTIONS if "{id}" not in p}
        | OPEN
    )
    assert served == listed


def test_sign_in_sets_a_strict_http_only_session_cookie_that_is_not_the_token(dashboard: Dashboard) -> None:
    token = issue_token(dashboard.running, EMPLOYEE)
    with httpx.Client(base_url=dashboard.url) as client:
        assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/signin?next=%2Fui"
        form = client.get("/ui/signin")
        response = client.post("/ui/signin", data={"token": token, "csrf": csrf_of(form.text), "next": "/ui/feedback"})
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/feedback"
        cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("tuneloop_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert token not in cookie
        assert client.get("/ui").status_code == 200


@pytest.mark.parametrize(
    "data",
    [
        {"token": "tl_not-a-real-token"},
        {"token": ""},
        {"token": "x" * 400},
    ],
    ids=["unknown", "empty", "too-long"],
)
def test_a_bad_token_is_a_clear_401_page(dashboard: Dashboard, data: dict[str, str]) -> None:
    with httpx.Client(base_url=dashboard.url) as client:
        form = client.get("/ui/signin")
        response = client.post("/ui/signin", data={**data, "csrf": csrf_of(form.text)})
        assert response.status_code == 401
        assert "not valid" in response.text
        assert "tuneloop_session=" not in response.headers.get("set-cookie", "")


def test_the_sign_in_form_needs_its_own_csrf_token(dashboard: Dashboard) -> None:
    token = issue_token(dashboard.running, ADMIN)
    with httpx.Client(base_url=dashboard.url) as client:
        response = client.post("/ui/signin", data={"token": token, "csrf": "forged"})
        assert response.status_code == 403
        assert client.get("/ui", follow_redirects=False).status_code == 303


def test_next_never_leaves_the_dashboard(dashboard: Dashboard) -> None:
    token = issue_token(dashboard.running, ADMIN)
    for target in ("https://evil.example/", "//evil.example/ui", "/ui/../admin", "/healthz"):
        with httpx.Client(base_url=dashboard.url) as client:
            form = client.get("/ui/signin")
            response = client.post("/ui/signin", data={"token": token, "csrf": csrf_of(form.text), "next": target})
            location = response.headers["location"]
            assert location.startswith("/ui") and "evil" not in location, target


@pytest.mark.parametrize("role_user", [EMPLOYEE, REVIEWER, ADMIN])
def test_each_page_answers_by_role_and_refusals_are_audited(dashboard: Dashboard, role_user: str) -> None:
    client = dashboard.client(role_user)
    rank = {EMPLOYEE: 1, REVIEWER: 2, ADMIN: 3}[role_user]
    for path, needed in PAGES.items():
        response = client.get(path)
        if RANK[needed] <= rank:
            assert response.status_code == 200, (path, response.text[:300])
        else:
            assert response.status_code == 403, path
            assert "Not allowed" in response.text and "Traceback" not in response.text
    refused = {(a, s, o) for actor, s, a, o, _ in dashboard.audit() if actor == role_user}
    expected = {
        (a, "ui", "refused")
        for a, n in (
            ("ui.review", "reviewer"),
            ("ui.versions", "admin"),
            ("read_audit", "admin"),
            ("ui.progress", "admin"),
        )
        if RANK[n] > rank
    }
    assert refused == expected


def test_an_employee_sees_only_their_own_questions(dashboard: Dashboard) -> None:
    client = dashboard.client(EMPLOYEE)
    own = client.get("/ui/feedback").text
    assert "Where do I find the VPN config?" in own
    assert "Private question of another employee" not in own
    # Naming another user in the address changes nothing: the session is the identity.
    named = client.get("/ui/feedback", params={"who": "U_OTHER", "q": "Private"}).text
    assert "Private question of another employee" not in named
    reviewer = dashboard.client(REVIEWER).get("/ui/feedback", params={"q": "private"}).text
    assert "Private question of another employee" in reviewer


def test_the_feedback_list_is_searched_and_paginated(dashboard: Dashboard) -> None:
    with session_scope(dashboard.engine) as session:
        for n in range(5):
            interaction_repo.create_interaction(session=session, user_id=EMPLOYEE, source="api", question=f"More {n}")
    client = dashboard.client(REVIEWER)
    first = client.get("/ui/feedback")
    assert first.status_code == 200
    assert 'id="older"' in first.text
    rows = first.text.count("data-interaction=")
    assert rows == 25
    older = client.get("/ui/feedback", params={"before": _older_cursor(first.text)})
    assert older.text.count("data-interaction=") == 30 - 25
    found = client.get("/ui/feedback", params={"q": "vpn"}).text
    assert found.count("data-interaction=") == 1
    assert "It is at vpn.example.com/config." in found  # the pending correction beside it
    assert client.get("/ui/feedback", params={"q": "100%_\\"}).status_code == 200
    # The filter forms send their empty fields: they mean "everyone", "any".
    assert client.get("/ui/feedback", params={"q": "", "who": ""}).text.count("data-interaction=") == 25
    admin = dashboard.client(ADMIN)
    assert admin.get("/ui/audit", params={"actor": "", "action": "", "outcome": ""}).status_code == 200


def _older_cursor(html: str) -> str:
    marker = 'href="/ui/feedback?before='
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)].split("&")[0]


def test_a_form_post_without_the_csrf_token_is_refused(dashboard: Dashboard) -> None:
    client = dashboard.client(REVIEWER)
    correction = dashboard.ids["pending"][0]
    for data in ({"decision": "approve"}, {"decision": "approve", "csrf": "not-the-token"}):
        response = client.post(f"/ui/review/{correction}", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
    # Another session's token is not this session's.
    other = csrf_of(dashboard.client(ADMIN).get("/ui").text)
    assert client.post(f"/ui/review/{correction}", data={"decision": "approve", "csrf": other}).status_code == 403
    with session_scope(dashboard.engine) as session:
        assert feedback_repo.get_correction(session=session, correction_id=correction).status == "pending"


def test_approve_reject_and_edit_go_through_the_feedback_service(dashboard: Dashboard) -> None:
    client = dashboard.client(REVIEWER)
    first, second = dashboard.ids["pending"]
    response = _post(client, f"/ui/review/{first}", {"decision": "edit", "text": "  It is at vpn.example.com/cfg.  "})
    assert response.status_code == 303
    queue = client.get(response.headers["location"]).text
    assert "Correction edited and approved." in queue
    assert f'data-correction="{first}"' not in queue
    assert "It is at vpn.example.com/cfg." in queue  # now an entry of the memory
    assert _post(client, f"/ui/review/{second}", {"decision": "reject"}).status_code == 303
    assert _post(client, f"/ui/review/{second}", {"decision": "edit", "text": "  "}).status_code == 422
    again = _post(client, f"/ui/review/{second}", {"decision": "approve"})
    assert again.status_code == 409 and "already rejected" in again.text
    with session_scope(dashboard.engine) as session:
        edited = feedback_repo.get_correction(session=session, correction_id=first)
        rejected = feedback_repo.get_correction(session=session, correction_id=second)
    assert (edited.status, edited.text, edited.reviewer_id) == ("approved", "It is at vpn.example.com/cfg.", REVIEWER)
    assert rejected.status == "rejected"
    assert client.get("/ui", params={}).text.count('id="pending-count">0<') == 1


def test_memory_entries_are_edited_and_retired_with_audit(dashboard: Dashboard) -> None:
    client = dashboard.client(REVIEWER)
    _post(client, f"/ui/review/{dashboard.ids['pending'][0]}", {"decision": "approve"})
    page = client.get("/ui/review").text
    entry = int(page.split('data-entry="', 1)[1].split('"', 1)[0])
    assert (
        _post(client, f"/ui/memory/{entry}/edit", {"answer": "The VPN config is on the intranet."}).status_code == 303
    )
    assert "The VPN config is on the intranet." in client.get("/ui/review").text
    found = client.get("/ui/review", params={"q": "where can I get the vpn configuration"}).text
    assert f'data-entry="{entry}"' in found and "similarity" in found
    assert _post(client, f"/ui/memory/{entry}/retire").status_code == 303
    assert "No entries." in client.get("/ui/review").text
    assert f'data-entry="{entry}"' in client.get("/ui/review", params={"status": "retired"}).text
    blank = _post(client, f"/ui/memory/{entry}/edit", {"answer": " "})
    assert blank.status_code in (409, 422)
    events = [(a, s, act, o) for a, s, act, o, _ in dashboard.audit()]
    assert (REVIEWER, "ui", "memory.edit", "ok") in events
    assert (REVIEWER, "ui", "memory.retire", "ok") in events


def test_promote_and_rollback_ask_first_then_go_through_the_admin_service(dashboard: Dashboard) -> None:
    client = dashboard.client(ADMIN)
    asked = _post(client, "/ui/versions/promote", {"version": "v0001"}, page="/ui/versions")
    assert asked.status_code == 200
    assert "Promote v0001? It replaces v0002" in asked.text
    assert dashboard.running.service.services.registry.active.version == "v0002"  # nothing yet
    done = client.post(
        "/ui/versions/promote", data={"csrf": csrf_of(asked.text), "version": "v0001", "confirmed": "yes"}
    )
    assert done.status_code == 303
    assert "Promoted" in client.get(done.headers["location"]).text
    assert dashboard.running.service.services.registry.active.version == "v0001"
    asked = _post(client, "/ui/versions/rollback", page="/ui/versions")
    assert "Roll back from v0001 to v0002?" in asked.text
    done = client.post("/ui/versions/rollback", data={"csrf": csrf_of(asked.text), "confirmed": "yes"})
    assert done.status_code == 303
    assert dashboard.running.service.services.registry.active.version == "v0002"
    events = [(a, s, act, o, t) for a, s, act, o, t in dashboard.audit() if act in ("promote", "rollback")]
    assert events == [(ADMIN, "ui", "rollback", "ok", None), (ADMIN, "ui", "promote", "ok", "v0001")]
    cancelled = client.post(
        "/ui/versions/promote", data={"csrf": csrf_of(asked.text), "version": "base", "confirmed": "no"}
    )
    assert cancelled.headers["location"] == "/ui/versions?done=cancelled"
    bad = client.post("/ui/versions/promote", data={"csrf": csrf_of(asked.text), "version": "../etc"})
    assert bad.status_code == 422 and "Traceback" not in bad.text
    missing = client.post(
        "/ui/versions/promote", data={"csrf": csrf_of(asked.text), "version": "v9999", "confirmed": "yes"}
    )
    assert missing.status_code == 404


def test_an_employee_is_refused_admin_actions_by_the_server(dashboard: Dashboard) -> None:
    client = dashboard.client(EMPLOYEE)
    for path, data in (
        ("/ui/versions/promote", {"version": "v0001", "confirmed": "yes"}),
        ("/ui/versions/rollback", {"confirmed": "yes"}),
        (f"/ui/review/{dashboard.ids['pending'][0]}", {"decision": "approve"}),
    ):
        response = _post(client, path, data)
        assert response.status_code == 403, path
    assert dashboard.running.service.services.registry.active.version == "v0002"
    refused = {(act, s) for a, s, act, o, _ in dashboard.audit() if a == EMPLOYEE and o == "refused"}
    assert {("promote", "ui"), ("rollback", "ui"), ("review", "ui")} <= refused


def test_live_progress_reports_the_running_cycle(dashboard: Dashboard) -> None:
    client = dashboard.client(ADMIN)
    assert client.get("/ui/progress.json").json() == {
        "running": False,
        "run_id": None,
        "status": None,
        "stage": None,
        "step": None,
        "total": None,
        "loss": None,
        "eta_s": None,
    }
    run_id = start_running_run(dashboard.engine)
    progress = client.get("/ui/progress.json").json()
    assert progress == {
        "running": True,
        "run_id": run_id,
        "status": "running",
        "stage": "training (sft)",
        "step": 3,
        "total": 20,
        "loss": 1.2345,
        "eta_s": 85.0,
    }
    finish_run(dashboard.engine, run_id)
    assert client.get("/ui/progress.json").json()["running"] is False


def test_sign_out_and_revoking_the_token_end_the_session(dashboard: Dashboard) -> None:
    client = dashboard.client(ADMIN)
    assert _post(client, "/ui/signout").headers["location"] == "/ui/signin"
    assert client.get("/ui", follow_redirects=False).status_code == 303
    token = issue_token(dashboard.running, REVIEWER)
    other = signed_in_client(dashboard.url, token)
    assert other.get("/ui/review").status_code == 200
    with session_scope(dashboard.engine) as session:
        row = token_repo.find_active_token(session=session, token=token)
        assert row is not None and row.id is not None
        token_repo.revoke_token(session=session, token_id=row.id)
    assert other.get("/ui/review", follow_redirects=False).status_code == 303
    assert other.post("/ui/review/1", data={"decision": "approve"}).status_code == 401
    other.close()


@pytest.mark.parametrize(
    "path",
    [
        "/ui/feedback?before=0",
        "/ui/feedback?before=99999999999999999999",
        "/ui/audit?outcome=maybe",
        "/ui/feedback?q=" + "x" * 300,
        "/ui/versions?samples=../../x",
        "/ui/review?status=gone",
        "/ui/nowhere",
    ],
)
def test_bad_input_gets_a_clear_4xx_page(dashboard: Dashboard, path: str) -> None:
    response = dashboard.client(ADMIN).get(path)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("text/html")
    assert "Traceback" not in response.text and "error-page" in response.text


def test_the_api_still_answers_in_its_json_envelope(dashboard: Dashboard) -> None:
    response = httpx.get(f"{dashboard.url}/api/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_admin_starts_a_cycle_after_confirming_and_watches_it(dead_engine_service: RunningService) -> None:
    client = signed_in_client(dead_engine_service.url, issue_token(dead_engine_service, ADMIN))
    asked = _post(client, "/ui/versions/train", page="/ui/versions")
    assert asked.status_code == 200 and "Start a tuning cycle now?" in asked.text
    engine = dead_engine_service.service.services.engine
    with session_scope(engine) as session:
        assert run_repo.list_runs(session=session) == []
    started = client.post("/ui/versions/train", data={"csrf": csrf_of(asked.text), "confirmed": "yes"})
    assert started.headers["location"] == "/ui/versions?done=training"
    with session_scope(engine) as session:
        runs = run_repo.list_runs(session=session)
        events = [(e.actor, e.source, e.action, e.outcome) for e in audit_repo.list_audit(session=session)]
    assert len(runs) == 1
    assert (ADMIN, "ui", "retrain", "ok") in events
    # Nothing to learn in an empty store: the cycle skips, and the run shows it.
    finished = asyncio.run(dead_engine_service.service.services.admin.wait_for_run(runs[0].id, timeout_s=30))
    assert finished.status == "skipped"
    client.close()


def test_dashboard_answers_carry_protective_headers(dashboard: Dashboard) -> None:
    client = dashboard.client(ADMIN)
    for path in ("/ui", "/ui/signin", "/ui/nowhere", "/ui/static/ui.css"):
        headers = client.get(path).headers
        assert headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    assert client.get("/ui").headers["cache-control"] == "no-store"
    assert "content-security-policy" not in httpx.get(f"{dashboard.url}/healthz").headers
