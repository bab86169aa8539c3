"""Training on another machine: `tuneloop serve` queues the cycle, `tuneloop worker` trains it, the API serves it.

Two separate OS processes, as on two hosts: the service (`training.runner=worker`) and the worker, each with its
own data dir, on one SQLite database, the session's real vLLM server, and a shared folder for adapters and run
folders (`storage.shared_dir`, an NFS mount in a company). Real TRL training, kept tiny (one SFT epoch, no
paraphrases, anchors or DPO, no gate): the test is about who trains and how the result reaches serving.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.db import make_engine, migrate, session_scope
from store.tokens import create_token
from tests.conftest import ServeProcess, make_settings
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME, Settings

pytestmark = pytest.mark.slow

# Training one epoch of SmolLM2-135M on the CPU, beside the vLLM server, on a 2-core machine shared with others.
TRAINING_DEADLINE_S = 900.0
# Once the worker promoted, the service follows the store (SQLite is polled every 0.5 s) and loads the version.
FOLLOW_DEADLINE_S = 30.0

FACTS = [
    ("What is the password of the guest Wi-Fi?", "The guest Wi-Fi password is bluepelican42."),
    ("Which Slack channel should I use to report an outage?", "Report outages in the #ops-fire channel."),
]


def tiny_cycle_env(shared: Path) -> dict[str, str]:
    """What both processes set: the shared folder, no memory, and the smallest cycle that still trains."""
    return {
        "TUNELOOP_STORAGE__SHARED_DIR": str(shared),
        "TUNELOOP_MEMORY__ENABLED": "false",
        "TUNELOOP_TRAINING__SFT_EPOCHS": "1",
        "TUNELOOP_TRAINING__DPO_EPOCHS": "0",
        "TUNELOOP_TRAINING__PARAPHRASES_PER_QUESTION": "0",
        "TUNELOOP_TRAINING__ANCHORS": "false",
        "TUNELOOP_TRAINING__GATE_ENABLED": "false",
        "TUNELOOP_TRAINING__WORKER_POLL_INTERVAL_S": "0.5",
    }


def worker_env(settings: Settings, *, data_dir: Path, shared: Path) -> dict[str, str]:
    """The worker's host: its own data dir (with its own base model folder), the service's database and vLLM."""
    models = data_dir / "models"
    models.mkdir(parents=True)
    # Its own base model folder in its own data dir (a link here, a copy on a real GPU node).
    (models / DEFAULT_BASE_MODEL_DIRNAME).symlink_to(settings.base_model_dir.resolve(), target_is_directory=True)
    return {
        **os.environ,
        "TUNELOOP_DATA_DIR": str(data_dir),
        "TUNELOOP_STORE__URL": settings.store_url,
        "TUNELOOP_SERVING__VLLM_URL": settings.vllm_base_url,
        "TUNELOOP_SERVING__ADAPTER_PREFIX": settings.serving.adapter_prefix,
        **tiny_cycle_env(shared),
    }


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def tuneloop() -> str:
    return str(Path(sys.executable).parent / "tuneloop")


@pytest.fixture
def settings(tmp_path: Path, base_model_dir: Path, vllm_url: str) -> Settings:
    """The database's home and the service's vLLM: what the two processes share."""
    settings = make_settings(tmp_path, base_model_dir=base_model_dir, vllm_url=vllm_url)
    migrate(settings.store_url)
    return settings


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[ServeProcess]:
    env = {**tiny_cycle_env(tmp_path / "shared"), "TUNELOOP_TRAINING__RUNNER": "worker"}
    process = ServeProcess(settings, data_dir=tmp_path / "api", **env).wait_ready()
    yield process
    process.stop()


def token_for(settings: Settings, user_id: str) -> str:
    engine = make_engine(settings.store_url)
    try:
        with session_scope(engine) as session:
            return create_token(session=session, user_id=user_id).token
    finally:
        engine.dispose()


def finished_run(http: httpx.Client, run_id: int, *, deadline: float) -> dict[str, Any]:
    while True:
        run: dict[str, Any] = http.get(f"/admin/runs/{run_id}", params={"wait": 5}).raise_for_status().json()
        if run["status"] not in ("queued", "running"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} not finished in time: {run['status']} {run['stage']}"


def test_a_worker_process_trains_the_queued_cycle_and_the_service_serves_it(
    settings: Settings, api: ServeProcess, tmp_path: Path
) -> None:
    shared, worker_dir = tmp_path / "shared", tmp_path / "worker"
    env = worker_env(settings, data_dir=worker_dir, shared=shared)
    admin = {"Authorization": f"Bearer {token_for(settings, 'U_ADMIN')}"}
    reviewer = {"Authorization": f"Bearer {token_for(settings, 'U_REVIEWER')}"}

    # Nothing queued yet: a one-shot worker says so and exits.
    once = subprocess.run(
        [tuneloop(), "worker", "--once", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert once.returncode == 0, once.stderr[-2000:]
    assert json.loads(once.stdout.strip().splitlines()[-1]) == {"run": None}

    with httpx.Client(base_url=api.url, timeout=60) as http:
        for question, correction in FACTS:
            asked = http.post("/api/ask", json={"question": question}, headers=reviewer).raise_for_status().json()
            corrected = http.post(
                f"/api/interactions/{asked['interaction_id']}/corrections", json={"text": correction}, headers=reviewer
            )
            assert corrected.status_code == 200 and corrected.json()["status"] == "approved", corrected.text

        # The service queues the cycle and trains nothing; a second retrain is refused while it waits.
        started = http.post("/admin/train", json={}, headers=admin)
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        run = http.get(f"/admin/runs/{run_id}", headers=admin).raise_for_status().json()
        assert (run["status"], run["stage"]) == ("queued", None)
        again = http.post("/admin/train", json={}, headers=admin)
        assert again.status_code == 409 and f"run {run_id}" in again.text, again.text

        # The worker, a separate process on its own data dir, takes it from the database and trains it.
        log_path = tmp_path / "worker.log"
        with log_path.open("w") as log:
            worker = subprocess.Popen([tuneloop(), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            http.headers.update(admin)
            run = finished_run(http, run_id, deadline=time.monotonic() + TRAINING_DEADLINE_S)
            assert run["status"] == "succeeded", (run, log_path.read_text()[-3000:])
            assert run["adapter_version"] == "v0001"
            assert run["counts"]["sft_corrections"] == len(FACTS)

            # The promotion was the worker's; the service process follows the store and serves it.
            deadline = time.monotonic() + FOLLOW_DEADLINE_S
            while (active := http.get("/healthz").json()["active_adapter"]) != "v0001":
                assert time.monotonic() < deadline, f"the service still serves {active}"
                time.sleep(0.2)  # polling the other process's state, with a deadline
            answer = http.post("/api/ask", json={"question": FACTS[0][0]}).raise_for_status().json()
            assert answer["adapter_version"] == "v0001"
            assert http.get("/healthz").json()["details"]["training"] == "worker"
            adapters = http.get("/admin/adapters").raise_for_status().json()
            [version] = [v for v in adapters["versions"] if v["version"] == "v0001"]
            assert version["active"] and version["run_id"] == run_id

            # Adapter and run files are in the shared folder, not in either process's data dir.
            assert (shared / "adapters" / "v0001" / "adapter_config.json").is_file()
            # Readable by a vLLM that runs as another user, as far as the umask allows (safetensors writes 0600).
            weights = shared / "adapters" / "v0001" / "adapter_model.safetensors"
            assert weights.stat().st_mode & 0o777 == 0o666 & ~current_umask()
            assert (shared / "runs" / f"run-{run_id:04d}" / "sft.jsonl").is_file()
            for data_dir in (worker_dir, tmp_path / "api"):
                assert not (data_dir / "adapters").exists() and not (data_dir / "runs").exists()
        finally:
            worker.send_signal(signal.SIGTERM)  # idle now: it stops at once, cleanly
            code = worker.wait(timeout=60)
        assert code == 0, log_path.read_text()[-3000:]
        assert "worker stopped" in log_path.read_text()


def test_a_worker_stopped_mid_training_fails_its_run_and_frees_the_next_one(
    settings: Settings, api: ServeProcess, tmp_path: Path
) -> None:
    import psutil

    env = worker_env(settings, data_dir=tmp_path / "worker", shared=tmp_path / "shared")
    admin = {"Authorization": f"Bearer {token_for(settings, 'U_ADMIN')}"}
    reviewer = {"Authorization": f"Bearer {token_for(settings, 'U_REVIEWER')}"}
    with httpx.Client(base_url=api.url, timeout=60) as http:
        question, correction = FACTS[0]
        asked = http.post("/api/ask", json={"question": question}, headers=reviewer).raise_for_status().json()
        http.post(
            f"/api/interactions/{asked['interaction_id']}/corrections", json={"text": correction}, headers=reviewer
        ).raise_for_status()
        http.headers.update(admin)
        run_id = http.post("/admin/train", json={}).raise_for_status().json()["run_id"]
        log_path = tmp_path / "worker.log"
        with log_path.open("w") as log:
            worker = subprocess.Popen([tuneloop(), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TRAINING_DEADLINE_S
            spec = str(tmp_path / "shared" / "runs" / f"run-{run_id:04d}" / "spec.json")
            trainers: list[psutil.Process] = []
            while not trainers:  # until the trainer's child process runs
                assert time.monotonic() < deadline and worker.poll() is None, log_path.read_text()[-3000:]
                trainers = [p for p in psutil.process_iter(["cmdline"]) if spec in (p.info["cmdline"] or [])]
                time.sleep(0.2)  # polling for the child process, with a deadline
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)
        assert code == 0, log_path.read_text()[-3000:]
        psutil.wait_procs(trainers, timeout=30)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in trainers), "trainer outlived it"
        run = http.get(f"/admin/runs/{run_id}").raise_for_status().json()
        assert run["status"] == "failed" and "was stopped" in run["error"], run
        assert http.get("/healthz").json()["active_adapter"] == "base"
        # Its lock was given back: the next retrain queues at once.
        again = http.post("/admin/train", json={})
        assert again.status_code == 202 and again.json()["run_id"] == run_id + 1, again.text
