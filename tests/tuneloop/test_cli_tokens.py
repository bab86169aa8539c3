"""`tuneloop token create|list|revoke` on the service's host, and the CLI acting through the token it made.

The token commands run in this process against the service's own database (as they would on the host);
the other commands talk to a real service over HTTP (no vLLM: its URL points at nothing, questions fail 503).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import RunningService, free_port, make_settings
from tuneloop.cli import app


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningService]:
    settings = make_settings(tmp_path, base_model_dir=tmp_path / "no-model", vllm_url=f"http://127.0.0.1:{free_port()}")
    # The CLI's token commands read the same settings as the service: the same data dir, so the same database.
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TUNELOOP_ACCESS__ADMINS", '["U_ADMIN"]')
    monkeypatch.delenv("TUNELOOP_TOKEN", raising=False)
    running = RunningService(settings).start(wait_ready=False)
    yield running
    running.stop()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def run_json(*args: str) -> dict[str, Any]:
    code, out = run(*args, "--json")
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert code == 0, data
    return data


def test_create_list_use_and_revoke_a_token(host: RunningService) -> None:
    created = run_json("token", "create", "U_ADMIN", "--label", "laptop")
    assert created["user"] == "U_ADMIN" and created["role"] == "admin"
    token = created["token"]
    listed = run_json("token", "list")["tokens"]
    assert [(t["id"], t["user"], t["label"]) for t in listed] == [(created["id"], "U_ADMIN", "laptop")]
    assert token not in json.dumps(listed)  # only a prefix is ever shown again

    status = run_json("status", "--url", host.url, "--token", token)
    assert status["active_adapter"] == "base"
    audit = run_json("audit", "--url", host.url, "--token", token)
    assert audit["events"] == [] and audit["has_more"] is False

    run_json("token", "revoke", str(created["id"]))
    code, out = run("status", "--url", host.url, "--token", token, "--json")
    assert code == 1
    assert json.loads(out)["error"]["code"] == "unauthenticated"


def test_the_cli_acts_as_the_token_owner(host: RunningService, monkeypatch: pytest.MonkeyPatch) -> None:
    employee = run_json("token", "create", "U_EMPLOYEE")["token"]
    monkeypatch.setenv("TUNELOOP_TOKEN", employee)
    code, out = run("ask", "Where is the office?", "--url", host.url, "--json")
    assert code == 1
    interaction_id = json.loads(out)["error"]["interaction_id"]  # recorded, though vLLM is down
    code, out = run("promote", "base", "--url", host.url, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "forbidden"
    correction = run_json("correct", str(interaction_id), "It is on floor 3.", "--url", host.url)
    assert correction["author"] == "U_EMPLOYEE" and correction["status"] == "pending"


def test_without_a_token_or_with_user_the_cli_says_what_to_do(host: RunningService) -> None:
    code, out = run("status", "--url", host.url, "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert error["code"] == "no_token" and "tuneloop token create" in error["hint"]
    code, out = run("promote", "base", "--user", "U_ADMIN", "--token", "tl_x", "--url", host.url, "--json")
    assert code == 1
    assert json.loads(out)["error"]["code"] == "user_option_retired"


def test_token_create_refuses_an_unusable_user_id(host: RunningService) -> None:
    code, out = run("token", "create", "x" * 200, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "invalid_user"
    code, out = run("token", "revoke", "999", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found"
