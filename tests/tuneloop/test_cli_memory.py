"""`tuneloop memory list|search|show|edit|retire` against a real service (no vLLM: questions fail 503, recorded).

Entries come the way they do in use: an employee asks, a reviewer corrects, and the approval is an entry at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import RunningService, free_port, issue_token, make_settings
from tuneloop.cli import app

QUESTION = "How do I get a new laptop?"
ANSWER = "File a request in the #it-laptops channel; the IT desk ships laptops within five working days."
EDITED = "Order one in the IT portal under Hardware; it arrives within three working days."


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningService]:
    settings = make_settings(tmp_path, base_model_dir=tmp_path / "no-model", vllm_url=f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("TUNELOOP_URL", f"http://127.0.0.1:{settings.serving.port}")
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


def remembered(host: RunningService) -> tuple[str, int]:
    """A reviewer's token and the entry their correction of an employee's question made."""
    employee, reviewer = issue_token(host, "U_EMPLOYEE"), issue_token(host, "U_REVIEWER")
    code, out = run("ask", QUESTION, "--token", employee, "--json")
    assert code == 1
    interaction_id = json.loads(out)["error"]["interaction_id"]
    assert run_json("correct", str(interaction_id), ANSWER, "--token", reviewer)["status"] == "approved"
    (entry,) = run_json("memory", "list", "--token", reviewer)["entries"]
    return reviewer, entry["id"]


def test_a_reviewer_lists_searches_shows_and_edits_entries(host: RunningService) -> None:
    reviewer, entry_id = remembered(host)

    page = run_json("memory", "list", "--token", reviewer)
    assert [(e["id"], e["question"], e["answer"]) for e in page["entries"]] == [(entry_id, QUESTION, ANSWER)]
    assert page["has_more"] is False
    found = run_json("memory", "search", "What's the process to request a new laptop?", "--token", reviewer)
    assert found["entries"][0]["id"] == entry_id and found["entries"][0]["similarity"] > 0.5
    shown = run_json("memory", "show", str(entry_id), "--token", reviewer)
    assert shown["wordings"] == [QUESTION] and shown["approved_by"] == "U_REVIEWER"

    edited = run_json("memory", "edit", str(entry_id), "--answer", EDITED, "--token", reviewer)

    assert (edited["answer"], edited["approved_by"]) == (EDITED, "U_REVIEWER")
    code, out = run("memory", "show", str(entry_id), "--token", reviewer)
    assert code == 0 and EDITED in " ".join(out.split()) and "used by 0 answers" in out
    code, out = run("memory", "list", "--token", reviewer)
    assert code == 0 and f"{entry_id}: active" in out and QUESTION in out


def test_a_retired_entry_is_listed_as_retired_and_cannot_be_retired_or_edited_again(host: RunningService) -> None:
    reviewer, entry_id = remembered(host)

    retired = run_json("memory", "retire", str(entry_id), "--token", reviewer)

    assert retired["status"] == "retired"
    assert run_json("memory", "list", "--token", reviewer)["entries"] == []
    assert [e["id"] for e in run_json("memory", "list", "--status", "retired", "--token", reviewer)["entries"]] == [
        entry_id
    ]
    assert run_json("memory", "search", QUESTION, "--token", reviewer)["entries"] == []
    code, out = run("memory", "retire", str(entry_id), "--token", reviewer, "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert error["code"] == "conflict" and "already retired" in error["hint"]
    code, _out = run("memory", "edit", str(entry_id), "--answer", EDITED, "--token", reviewer)
    assert code == 1


def test_errors_say_what_to_do_and_exit_non_zero(host: RunningService) -> None:
    reviewer, entry_id = remembered(host)
    employee = issue_token(host, "U_EMPLOYEE")

    code, out = run("memory", "list", "--token", employee, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "forbidden"
    code, out = run("memory", "show", "999999", "--token", reviewer, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found" and json.loads(out)["error"]["hint"]
    code, out = run("memory", "edit", str(entry_id), "--answer", "   ", "--token", reviewer, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "invalid_answer"
    code, out = run("memory", "list", "--status", "gone", "--token", reviewer, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "invalid_status"

    result = CliRunner().invoke(app, ["memory", "retire", "999999", "--token", reviewer])
    assert result.exit_code == 1
    assert "memory entry 999999 does not exist" in result.stderr and "what to do:" in result.stderr
