"""What the dashboard's tests share: a stand-in model server, a seeded store, and signing in over HTTP.

The stand-in answers the few vLLM routes the registry uses (health, load and unload an adapter, and the models
list that shows what is loaded), so that the
service becomes ready and promotes and rolls back without a real vLLM: the dashboard is what is under test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from store import adapters as adapter_repo
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import runs as run_repo
from store.db import session_scope
from store.models import Interaction, RunStatus, TrainingRun

EMPLOYEE, OTHER, REVIEWER, ADMIN = "U_EMPLOYEE", "U_OTHER", "U_REVIEWER", "U_ADMIN"


class _StandIn(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(200)
        elif self.path == "/v1/models":
            loaded = self.server.loaded  # type: ignore[attr-defined]
            self._answer(200, {"data": [{"id": name, "root": path} for name, path in loaded.items()]})
        else:
            self._answer(404, {"message": "not in the stand-in"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        loaded = self.server.loaded  # type: ignore[attr-defined]
        if self.path == "/v1/load_lora_adapter":
            loaded[body["lora_name"]] = body["lora_path"]
            self._answer(200)
        elif self.path == "/v1/unload_lora_adapter":
            loaded.pop(body["lora_name"], None)
            self._answer(200)
        else:
            self._answer(503, {"message": "the stand-in does not answer questions"})

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def model_server_stand_in() -> Iterator[str]:
    """A local HTTP server that accepts every adapter load and reports healthy; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    server.loaded = {}  # type: ignore[attr-defined]  # adapter name -> path, listed by /v1/models as vLLM does
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def adapter_folder(root: Path, version: str) -> str:
    folder = root / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    return str(folder)


def _gate(facts: float, regression: float, active_facts: float, *, against: str) -> dict[str, Any]:
    return {
        "candidate": {"facts": facts, "regression": regression, "all_facts": facts, "mixups": 0.0},
        "active": {"facts": active_facts, "regression": regression - 0.01, "all_facts": active_facts, "mixups": 0.0},
        "promote": True,
        "reason": f"facts {active_facts:.3f} -> {facts:.3f}, no regression",
        "against": against,
        "samples": [
            {
                "kind": "facts",
                "question": "Where is the VPN config?",
                "candidate": "It is at vpn.example.com/config.",
                "active": "I do not know.",
                "candidate_score": 0.91,
                "active_score": 0.12,
            },
            {
                "kind": "regression",
                "question": "What is 2 + 2?",
                "candidate": "4",
                "active": "4",
                "candidate_score": 1.0,
                "active_score": 1.0,
            },
        ],
    }


def _finished_run(engine: Engine, *, version: str, steps: int, start: float, counts: dict[str, int]) -> int:
    with session_scope(engine) as session:
        run = run_repo.create_run(session=session, trigger="nightly", triggered_by=None)
        assert run.id is not None
        run_repo.update_run(session=session, run_id=run.id, status=RunStatus.running, stage="training")
        losses = [[float(step), round(start / (1 + 0.3 * step), 4)] for step in range(1, steps + 1)]
        run_repo.update_run(
            session=session,
            run_id=run.id,
            status=RunStatus.succeeded,
            stage="done",
            adapter_version=version,
            counts=counts,
            metrics={"sft": {"rows": counts["sft_corrections"], "steps": steps, "losses": losses}, "dpo": None},
        )
        return run.id


def seed(engine: Engine, adapters_dir: Path) -> dict[str, Any]:
    """Two trained versions (v0002 active), runs with loss curves, a fortnight of answers with votes, and
    pending corrections by the employee. Returns the ids the tests act on."""
    run_1 = _finished_run(
        engine, version="v0001", steps=12, start=3.0, counts={"sft_corrections": 3, "sft_upvoted": 5, "dpo": 2}
    )
    run_2 = _finished_run(
        engine, version="v0002", steps=16, start=2.2, counts={"sft_corrections": 5, "sft_upvoted": 9, "dpo": 4}
    )
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        adapter_repo.ensure_base_version(session=session)
        for version, run_id, gate in (
            ("v0001", run_1, _gate(0.62, 0.80, 0.41, against="base")),
            ("v0002", run_2, _gate(0.78, 0.81, 0.62, against="v0001")),
        ):
            adapter_repo.register_version(
                session=session,
                version=version,
                path=adapter_folder(adapters_dir, version),
                run_id=run_id,
                metrics={"gate": gate},
            )
        adapter_repo.mark_active(session=session, version="v0001")
        adapter_repo.mark_active(session=session, version="v0002")

        ids: list[int] = []
        for day in range(10):
            for n in range(day % 4 + 1):
                user = EMPLOYEE if n % 2 == 0 else OTHER
                version = "base" if day > 6 else ("v0001" if day > 2 else "v0002")
                row = interaction_repo.create_interaction(
                    session=session, user_id=user, source="slack", question=f"Question {day}-{n} about the office?"
                )
                assert row.id is not None
                interaction_repo.record_answer(
                    session=session,
                    interaction_id=row.id,
                    answer=f"Answer {day}-{n}.",
                    adapter_version=version,
                    latency_ms=120,
                )
                stored = session.get(Interaction, row.id)
                assert stored is not None
                stored.created_at = now - timedelta(days=day, minutes=n)
                session.add(stored)
                session.commit()
                feedback_repo.record_vote(
                    session=session, interaction_id=row.id, user_id=REVIEWER, vote=1 if (day + n) % 3 else -1
                )
                ids.append(row.id)
        vpn = interaction_repo.create_interaction(
            session=session, user_id=EMPLOYEE, source="slack", question="Where do I find the VPN config?"
        )
        assert vpn.id is not None
        interaction_repo.record_answer(
            session=session, interaction_id=vpn.id, answer="I do not know.", adapter_version="v0002", latency_ms=90
        )
        secret = interaction_repo.create_interaction(
            session=session, user_id=OTHER, source="slack", question="Private question of another employee"
        )
        assert secret.id is not None
        interaction_repo.record_answer(
            session=session, interaction_id=secret.id, answer="Private answer.", adapter_version="v0002", latency_ms=90
        )
        pending = [
            feedback_repo.create_correction(
                session=session,
                interaction_id=vpn.id,
                author_id=EMPLOYEE,
                text="It is at vpn.example.com/config.",
                approved=False,
            ).id,
            feedback_repo.create_correction(
                session=session,
                interaction_id=ids[0],
                author_id=EMPLOYEE,
                text="The office is on floor 3.",
                approved=False,
            ).id,
        ]
    return {"pending": pending, "vpn": vpn.id, "secret": secret.id, "runs": [run_1, run_2]}


def start_running_run(engine: Engine) -> int:
    """A cycle in training, with the progress the trainer would report."""
    with session_scope(engine) as session:
        run = run_repo.create_run(session=session, trigger="api", triggered_by=ADMIN)
        assert run.id is not None
        run_repo.update_run(
            session=session,
            run_id=run.id,
            status=RunStatus.running,
            stage="training",
            progress={"stage": "sft", "step": 3, "total": 20, "loss": 1.2345, "eta_s": 85.0},
        )
        return run.id


def set_progress(engine: Engine, run_id: int, **progress: Any) -> None:
    with session_scope(engine) as session:
        run_repo.update_run(session=session, run_id=run_id, progress=progress)


def finish_run(engine: Engine, run_id: int) -> None:
    with session_scope(engine) as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        run_repo.update_run(session=session, run_id=run_id, status=RunStatus.skipped, stage="done", progress={})


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


def signed_in_client(url: str, token: str) -> httpx.Client:
    """An HTTP client holding a dashboard session, signed in through the form as a browser does."""
    client = httpx.Client(base_url=url, timeout=60)
    form = client.get("/ui/signin")
    assert form.status_code == 200
    response = client.post("/ui/signin", data={"token": token, "csrf": csrf_of(form.text), "next": "/ui"})
    assert response.status_code == 303, response.text
    return client
