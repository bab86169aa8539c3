"""A tuning cycle that crashes fails safely: marked failed with the cause, the active adapter keeps
serving throughout, and the next cycle starts cleanly. Real vLLM, real TRL worker, killed with SIGKILL.
"""

from __future__ import annotations

import signal
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import RunningService

pytestmark = pytest.mark.slow


def run_state(http: httpx.Client, run_id: int, *, wait: float = 0) -> dict[str, Any]:
    response = http.get(f"/admin/runs/{run_id}", params={"wait": wait})
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def training_worker(spec_path: str) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        if spec_path in (process.info["cmdline"] or []):
            return process
    raise AssertionError(f"no training worker for {spec_path}")


def test_a_killed_training_run_is_marked_failed_and_serving_goes_on(service: RunningService) -> None:
    with httpx.Client(base_url=service.url, timeout=120) as http:
        asked = http.post("/api/ask", json={"question": "Who approves travel expenses?", "user": "U_EMPLOYEE"})
        interaction_id = asked.json()["interaction_id"]
        http.post(
            f"/api/interactions/{interaction_id}/corrections",
            json={"user": "U_REVIEWER", "text": "Travel expenses are approved by Marta Kowalski."},
        ).raise_for_status()

        run_id = http.post("/admin/train", json={"user": "U_ADMIN"}).json()["run_id"]
        run = run_state(http, run_id)
        # Follow the run (long polls) until the worker reports its first training step.
        for _ in range(300):
            if run["stage"] == "training" and run["progress"].get("step"):
                break
            assert run["status"] == "running", run
            run = run_state(http, run_id, wait=1)
        spec_path = str(service.settings.runs_dir / f"run-{run_id:04d}" / "spec.json")
        training_worker(spec_path).send_signal(signal.SIGKILL)

        run = run_state(http, run_id, wait=60)
        assert run["status"] == "failed"
        assert "exited with code -9" in run["error"]
        assert run["adapter_version"] is None

        # The active adapter kept serving throughout, and still does.
        health = http.get("/healthz").json()
        assert health["active_adapter"] == "base"
        answer = http.post("/api/ask", json={"question": "Who approves travel expenses?", "user": "U_EMPLOYEE"})
        assert answer.status_code == 200
        assert answer.json()["adapter_version"] == "base"

        # The next cycle starts cleanly and finishes.
        next_id = http.post("/admin/train", json={"user": "U_ADMIN"}).json()["run_id"]
        assert next_id == run_id + 1
        finished = run_state(http, next_id, wait=60)
        while finished["status"] in ("queued", "running"):
            finished = run_state(http, next_id, wait=60)
        assert finished["status"] in ("succeeded", "rejected"), finished
        assert finished["adapter_version"] == "v0001"
