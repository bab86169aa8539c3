"""The whole loop on the real stack, no test doubles: ask -> correct -> train -> hot-swap -> better answer.

Real vLLM (CPU build) with the real SmolLM2-135M, real TRL training in a child process, real SQLite,
driven through the `tuneloop` CLI against the running service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import RunningService, issue_token
from training.datasets import normalise_question, read_jsonl
from tuneloop.cli import app

pytestmark = pytest.mark.slow

# Company facts the base model cannot know: (question, correction, key that proves recall, unseen paraphrase).
FACTS = [
    (
        "What is the password of the guest Wi-Fi?",
        "The guest Wi-Fi password is bluepelican42.",
        "bluepelican42",
        "I need to get on the guest wireless network, what's the password?",
    ),
    (
        "Which Slack channel should I use to report an outage?",
        "Report outages in the #ops-fire channel.",
        "ops-fire",
        "Where do outages get reported on Slack?",
    ),
    (
        "What is the address of the Berlin office?",
        "The Berlin office is at Kastanienallee 12.",
        "kastanienallee",
        "Where exactly is our office in Berlin located?",
    ),
    (
        "Who approves travel expenses?",
        "Travel expenses are approved by Marta Kowalski.",
        "kowalski",
        "Whose approval do I need for a business trip expense?",
    ),
    (
        "On which day of the month is payroll paid?",
        "Payroll is paid on the 27th of each month.",
        "27",
        "Which date does payroll land on every month?",
    ),
]


def cli(service: RunningService, *args: str, as_user: str = "U_ADMIN") -> dict[str, Any]:
    """The `tuneloop` command, as `as_user` (with that user's token), printing JSON."""
    result = CliRunner().invoke(app, [*args, "--url", service.url, "--json", "--token", issue_token(service, as_user)])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def test_corrections_are_learned_and_recalled_in_other_words(adapter_only_service: RunningService) -> None:
    service = adapter_only_service  # the memory of reviewed answers off: recall is the adapter's alone
    # 1. The base model does not know the facts.
    asked = []
    for question, correction, key, _paraphrase in FACTS:
        answer = cli(service, "ask", question, as_user="U_EMPLOYEE")
        assert answer["adapter_version"] == "base"
        assert key not in answer["answer"].lower()
        asked.append((answer["interaction_id"], correction))

    # 2. A reviewer corrects each answer: approved at once.
    for interaction_id, correction in asked:
        corrected = cli(service, "correct", str(interaction_id), correction, as_user="U_REVIEWER")
        assert corrected["status"] == "approved"

    # 3. One tuning cycle, and the new version serves.
    run = cli(service, "train", as_user="U_ADMIN")
    assert run["status"] == "succeeded", run
    assert run["adapter_version"] == "v0001"
    assert run["counts"]["sft_corrections"] == len(FACTS)
    assert run["counts"]["dpo_rows"] == len(FACTS)
    assert run["counts"]["sft_anchors"] > 0
    assert run["metrics"]["sft"]["train_loss"] > 0
    gate = run["metrics"]["gate"]
    assert gate["promote"] is True, gate["reason"]
    assert gate["candidate"]["facts"] > gate["active"]["facts"]  # held-out paraphrases, scored against base
    adapters = cli(service, "adapters")
    assert adapters["active"] == "v0001"

    # The paraphrases we ask below appear nowhere in what was trained on.
    run_dir = Path(service.settings.runs_dir) / f"run-{run['id']:04d}"
    trained_questions = {normalise_question(row["prompt"][-1]["content"]) for row in read_jsonl(run_dir / "sft.jsonl")}
    assert len(trained_questions) > len(FACTS), "paraphrases were added to the training data"
    for _question, _correction, _key, paraphrase in FACTS:
        assert normalise_question(paraphrase) not in trained_questions

    # 4. Each fact is recalled when asked in other words (the paraphrases trained on are seeded, so every run
    # trains on the same data).
    for _question, _correction, key, paraphrase in FACTS:
        answer = cli(service, "ask", paraphrase, as_user="U_EMPLOYEE")
        assert answer["adapter_version"] == "v0001"
        assert key in answer["answer"].lower(), f"{paraphrase!r} -> {answer['answer']!r}"

    # 5. Rolling back brings the old behaviour back at once.
    rolled = cli(service, "rollback", as_user="U_ADMIN")
    assert rolled["active"] == "base"
    for _question, _correction, key, paraphrase in FACTS:
        answer = cli(service, "ask", paraphrase, as_user="U_EMPLOYEE")
        assert answer["adapter_version"] == "base"
        assert key not in answer["answer"].lower()

    events = {(e["action"], e["outcome"], e["actor"]) for e in cli(service, "audit")["events"]}
    assert {("retrain", "ok", "U_ADMIN"), ("rollback", "ok", "U_ADMIN")} <= events
