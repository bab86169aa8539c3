"""A tuning cycle that crashes fails safely: marked failed with the cause, the active adapter keeps
serving throughout, and the next cycle starts cleanly. Real vLLM, real TRL worker, killed with SIGKILL;
a full disk is the kernel's own ENOSPC, from a dataset file that points at /dev/full.
"""

from __future__ import annotations

import signal
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import RunningService, bearer

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


def finish(http: httpx.Client, run_id: int) -> dict[str, Any]:
    run = run_state(http, run_id, wait=60)
    while run["status"] in ("queued", "running"):
        run = run_state(http, run_id, wait=60)
    return run


def assert_base_still_serves(http: httpx.Client) -> None:
    assert http.get("/healthz").json()["active_adapter"] == "base"
    answer = http.post("/api/ask", json={"question": "Who approves travel expenses?"})
    assert answer.status_code == 200
    assert answer.json()["adapter_version"] == "base"


def test_a_full_disk_and_a_killed_training_run_fail_safely(service: RunningService) -> None:
    with httpx.Client(base_url=service.url, timeout=120, headers=bearer(service, "U_ADMIN")) as http:
        asked = http.post("/api/ask", json={"question": "Who approves travel expenses?"})
        interaction_id = asked.json()["interaction_id"]
        http.post(
            f"/api/interactions/{interaction_id}/corrections",
            json={"text": "Travel expenses are approved by Marta Kowalski."},
        ).raise_for_status()

        # The disk is full when the first cycle writes its training data.
        full_file = service.settings.runs_dir / "run-0001" / "sft.jsonl"
        full_file.parent.mkdir(parents=True)
        full_file.symlink_to("/dev/full")
        full_id = http.post("/admin/train", json={}).json()["run_id"]
        assert full_id == 1
        run = finish(http, full_id)
        assert run["status"] == "failed"
        assert "No space left on device" in run["error"]
        assert run["adapter_version"] is None
        assert_base_still_serves(http)
        full_file.unlink()  # space is freed

        # The next cycle starts cleanly; its training worker is killed mid-way.
        run_id = http.post("/admin/train", json={}).json()["run_id"]
        run = run_state(http, run_id)
        # Follow the run (long polls) until the worker reports its first training step.
        for _ in range(300):
            if run["stage"] == "training" and run["progress"].get("step"):
                break
            assert run["status"] in ("queued", "running"), run  # the cycle marks itself running from a thread
            run = run_state(http, run_id, wait=1)
        spec_path = str(service.settings.runs_dir / f"run-{run_id:04d}" / "spec.json")
        training_worker(spec_path).send_signal(signal.SIGKILL)

        run = run_state(http, run_id, wait=60)
        assert run["status"] == "failed"
        assert "exited with code -9" in run["error"]
        assert run["adapter_version"] is None

        # The active adapter kept serving throughout, and still does.
        assert_base_still_serves(http)

        # The next cycle starts cleanly and finishes.
        next_id = http.post("/admin/train", json={}).json()["run_id"]
        assert next_id == run_id + 1
        finished = finish(http, next_id)
        assert finished["status"] in ("succeeded", "rejected"), finished
        assert finished["adapter_version"] == "v0001"
