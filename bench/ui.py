"""The dashboard's page times with 100,000 interactions in the store (SQLite): p50 and p95 per page.

`python -m bench.ui` fills a fresh SQLite store (100,000 interactions over 100 days, half of them voted on,
pending and reviewed corrections, audit events, runs with loss curves, versions with gate scores), starts the
service over real HTTP with a stand-in model server, signs in through the form, and times each page from the
client. The first request of a page is reported apart (cold: plots not yet drawn). Writes bench/ui.json.
Not a test: it asserts nothing. The goal is under 200 ms per page.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from store.db import session_scope
from store.models import AdapterVersion, AuditEvent, Correction, Feedback, Interaction, TrainingRun
from tests.conftest import REPO, RunningService, issue_token, make_settings
from tests.serving.ui_support import ADMIN, EMPLOYEE, adapter_folder, model_server_stand_in, signed_in_client

USERS = [EMPLOYEE, *(f"U{n:05d}" for n in range(200))]
PAGES = {
    "overview": "/ui",
    "review": "/ui/review",
    "versions and runs": "/ui/versions",
    "feedback (newest)": "/ui/feedback",
    "feedback (page 2,000 of 4,000)": "/ui/feedback?before=50000",
    "feedback (search)": "/ui/feedback?q=invoice",
    "feedback (search, no match: every row read)": "/ui/feedback?q=zeppelin",
    "feedback (one user)": f"/ui/feedback?who={EMPLOYEE}",
    "audit": "/ui/audit",
    "audit (filtered)": f"/ui/audit?actor={ADMIN}&outcome=ok",
    "live progress (JSON)": "/ui/progress.json",
}
EMPLOYEE_PAGES = {"my questions (employee)": "/ui/feedback"}


def fill(engine: Engine, *, interactions: int, adapters_dir: Path, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    versions = ["base", *(f"v{n:04d}" for n in range(1, 11))]
    topics = ["VPN", "invoice", "holiday", "printer", "laptop", "payroll", "office", "parking", "badge", "wifi"]
    with session_scope(engine) as session:
        connection = session.connection()
        runs = []
        for n in range(1, 21):
            steps = 120
            runs.append(
                {
                    "created_at": now - timedelta(days=100 - 5 * n),
                    "trigger": "nightly",
                    "status": "succeeded",
                    "stage": "done",
                    "progress": {},
                    "counts": {"sft_corrections": 40 + n, "sft_upvoted": 300 + 7 * n, "dpo": 20 + n},
                    "metrics": {"sft": {"losses": [[s, 2.5 / (1 + 0.05 * s * n)] for s in range(1, steps + 1)]}},
                    "timings": {},
                    "adapter_version": versions[min(n, 10)],
                }
            )
        connection.execute(insert(TrainingRun), runs)
        gate = {
            "candidate": {"facts": 0.7, "regression": 0.8},
            "active": {"facts": 0.6, "regression": 0.8},
            "reason": "facts 0.600 -> 0.700, no regression",
            "samples": [{"kind": "facts", "question": "q", "candidate": "a", "active": "b"}] * 6,
        }
        connection.execute(
            insert(AdapterVersion),
            [
                {
                    "version": v,
                    "path": None if v == "base" else adapter_folder(adapters_dir, v),
                    "run_id": None if v == "base" else i * 2,
                    "status": "active" if v == versions[-1] else "ready",
                    "metrics": {} if v == "base" else {"gate": gate},
                    "created_at": now - timedelta(days=100 - 9 * i),
                    "promoted_at": now - timedelta(days=100 - 9 * i),
                }
                for i, v in enumerate(versions)
            ],
        )
        rows = []
        for n in range(interactions):
            created = now - timedelta(seconds=int(100 * 86400 * (1 - n / interactions)))
            topic = rng.choice(topics)
            rows.append(
                {
                    "created_at": created,
                    "user_id": rng.choice(USERS),
                    "source": "slack",
                    "question": f"How do I sort out my {topic} question number {n}?",
                    "context": [],
                    "answer": f"Here is how the {topic} works: step one, step two ({n}).",
                    "adapter_version": versions[min(10, n * 11 // interactions)],
                    "latency_ms": rng.randint(80, 900),
                    "status": "answered",
                }
            )
        for start in range(0, len(rows), 5000):
            connection.execute(insert(Interaction), rows[start : start + 5000])
        votes = [
            {"interaction_id": n, "user_id": "U_VOTER", "vote": 1 if rng.random() < 0.7 else -1}
            for n in range(1, interactions + 1, 2)
        ]
        for start in range(0, len(votes), 5000):
            connection.execute(insert(Feedback), votes[start : start + 5000])
        corrections = [
            {
                "interaction_id": rng.randint(1, interactions),
                "author_id": rng.choice(USERS),
                "text": f"The right answer is number {n}.",
                "status": "pending" if n % 10 == 0 else "approved",
                "reviewer_id": None if n % 10 == 0 else "U_REVIEWER",
            }
            for n in range(2000)
        ]
        connection.execute(insert(Correction), corrections)
        connection.execute(
            insert(AuditEvent),
            [
                {
                    "actor": rng.choice([ADMIN, "U_REVIEWER", EMPLOYEE]),
                    "source": rng.choice(["api", "slack", "ui"]),
                    "action": rng.choice(["promote", "rollback", "review", "memory.edit", "retrain"]),
                    "target": "v0003",
                    "outcome": rng.choice(["ok", "ok", "ok", "refused", "failed"]),
                    "detail": {"n": n},
                }
                for n in range(5000)
            ],
        )
        session.commit()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_pages(client: Any, pages: dict[str, str], repeats: int) -> dict[str, dict[str, float]]:
    figures = {}
    for name, path in pages.items():
        started = time.perf_counter()
        first = client.get(path)
        cold = (time.perf_counter() - started) * 1000
        assert first.status_code == 200, (path, first.status_code, first.text[:300])
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        figures[name] = {
            "cold_ms": round(cold, 1),
            "p50_ms": round(statistics.median(samples), 1),
            "p95_ms": round(percentile(samples, 0.95), 1),
            "bytes": len(first.content),
        }
        print(f"| {name} | {figures[name]['p50_ms']} | {figures[name]['p95_ms']} | {figures[name]['cold_ms']} |")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, model_server_stand_in() as model_url:
        tmp = Path(folder)
        settings = make_settings(tmp, base_model_dir=tmp / "no-model", vllm_url=model_url)
        running = RunningService(settings)
        started = time.perf_counter()
        fill(running.service.services.engine, interactions=args.interactions, adapters_dir=tmp / "adapters")
        print(f"filled the store with {args.interactions:,} interactions in {time.perf_counter() - started:.1f} s")
        running.start()
        try:
            print("| page | p50 ms | p95 ms | first request ms |")
            print("|---|---|---|---|")
            admin = signed_in_client(running.url, issue_token(running, ADMIN))
            figures = time_pages(admin, PAGES, args.repeats)
            employee = signed_in_client(running.url, issue_token(running, EMPLOYEE))
            figures |= time_pages(employee, EMPLOYEE_PAGES, args.repeats)
        finally:
            running.stop()
    out = REPO / "bench" / "ui.json"
    out.write_text(json.dumps({"interactions": args.interactions, "repeats": args.repeats, "pages": figures}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
