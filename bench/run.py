"""Benchmarks for the README: time to ready, answer latency, one cycle's wall time, adapter swap time.

`python -m bench.run` (or `make bench`) starts its own vLLM and service in a temporary data dir,
prints a Markdown table, and writes the figures to bench/results.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from serving.engine import VLLMProcess
from tests.bot.slack_requests import SIGNING_SECRET, app_mention, event_callback, sign
from tests.bot.slack_stub import SlackStub
from tuneloop.base_model import pull_default_model
from tuneloop.service import build_service, engine_config
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME, Settings

REPO = Path(__file__).resolve().parent.parent
FACTS = [
    ("What is the password of the guest Wi-Fi?", "The guest Wi-Fi password is bluepelican42."),
    ("Which Slack channel should I use to report an outage?", "Report outages in the #ops-fire channel."),
    ("What is the address of the Berlin office?", "The Berlin office is at Kastanienallee 12."),
    ("Who approves travel expenses?", "Travel expenses are approved by Marta Kowalski."),
    ("On which day of the month is payroll paid?", "Payroll is paid on the 27th of each month."),
]
QUESTIONS = ["What is the capital of France?", "How many days are in a week?", "Name a primary colour."]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latencies(http: httpx.AsyncClient, count: int) -> dict[str, float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        response = await http.post("/api/ask", json={"question": QUESTIONS[i % len(QUESTIONS)], "user": "bench"})
        response.raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(samples)), "p95_ms": round(percentile(samples, 0.95)), "n": count}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    model_dir, _ = pull_default_model(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME)
    # Slack cannot be reached from here: the bot talks to the tests' local stand-in for its Web API.
    stub = SlackStub().start()
    settings = Settings(
        data_dir=data_dir,
        slack={"api_url": stub.api_url, "bot_token": "xoxb-bench", "signing_secret": SIGNING_SECRET},
        serving={
            "base_model": model_dir,
            "vllm_port": args.vllm_port,
            "port": args.port,
            "vllm_url": f"http://127.0.0.1:{args.vllm_port}",
        },
        training={"nightly_enabled": False},
        access={"admins": ["bench"], "reviewers": ["bench"]},
    )
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "model": "SmolLM2-135M-Instruct float32"}

    print("starting vLLM ...", flush=True)
    vllm = VLLMProcess(engine_config(settings))
    vllm.start()
    try:
        results["time_to_ready_s"] = round(await vllm.wait_healthy(timeout_s=600), 1)
        service = build_service(settings)
        server = uvicorn.Server(uvicorn.Config(service.app, host="127.0.0.1", port=args.port, log_level="warning"))
        serve_task = asyncio.create_task(server.serve())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.port}", timeout=600) as http:
            while (await _healthz(http)) != 200:
                await asyncio.sleep(0.2)  # waiting for readiness
            print("measuring answer latency (base) ...", flush=True)
            results["latency_base"] = await latencies(http, args.requests)

            for question, correction in FACTS:
                asked = (await http.post("/api/ask", json={"question": question, "user": "bench"})).json()
                await http.post(
                    f"/api/interactions/{asked['interaction_id']}/corrections",
                    json={"user": "bench", "text": correction},
                )
            print("running one tuning cycle ...", flush=True)
            started = time.perf_counter()
            run_id = (await http.post("/admin/train", json={"user": "bench"})).json()["run_id"]
            run = (await http.get(f"/admin/runs/{run_id}", params={"wait": 60})).json()
            while run["status"] in ("queued", "running"):
                run = (await http.get(f"/admin/runs/{run_id}", params={"wait": 60})).json()
            results["cycle"] = {
                "status": run["status"],
                "wall_s": round(time.perf_counter() - started, 1),
                **run["timings"],
                "counts": run["counts"],
            }

            print("measuring answer latency (adapter) ...", flush=True)
            results["latency_adapter"] = await latencies(http, args.requests)

            swaps = []
            for version in ["base", "v0001"] * 5:
                response = await http.post("/admin/promote", json={"user": "bench", "version": version})
                swaps.append(response.json()["swap_ms"])
            results["swap_loaded_ms"] = {"p50": round(statistics.median(swaps), 2), "max": round(max(swaps), 2)}
            results["swap_first_load_ms"] = round(run["timings"].get("swap_s", 0) * 1000, 1)

            print(f"measuring Slack ack latency for {args.mentions} concurrent mentions ...", flush=True)
            results["slack_ack"] = await slack_ack_latency(http, stub, args.mentions)
        server.should_exit = True
        await serve_task
    finally:
        vllm.stop()
        stub.stop()
    return results


async def slack_ack_latency(http: httpx.AsyncClient, stub: SlackStub, count: int) -> dict[str, float]:
    """Signed app_mention events, all at once; the figure is how long Slack would wait for each ack."""

    async def one(index: int) -> float:
        ts = stub.add_message("C_BENCH", f"<@U_BOT> question {index}: {QUESTIONS[index % len(QUESTIONS)]}", user="U_B")
        body = json.dumps(event_callback(app_mention(channel="C_BENCH", user="U_B", text=f"<@U_BOT> q{index}", ts=ts)))
        headers = {"Content-Type": "application/json", **sign(body)}
        started = time.perf_counter()
        response = await http.post("/slack/events", content=body, headers=headers)
        response.raise_for_status()
        return (time.perf_counter() - started) * 1000

    samples = list(await asyncio.gather(*(one(i) for i in range(count))))
    return {"p50_ms": round(statistics.median(samples)), "p99_ms": round(percentile(samples, 0.99)), "n": count}


async def _healthz(http: httpx.AsyncClient) -> int:
    try:
        return (await http.get("/healthz")).status_code
    except httpx.TransportError:
        return 0


def print_table(r: dict[str, Any]) -> None:
    cycle = r["cycle"]
    rows = [
        ("time to ready (vLLM start to healthy)", f"{r['time_to_ready_s']} s"),
        ("answer latency, base (p50 / p95)", f"{r['latency_base']['p50_ms']} / {r['latency_base']['p95_ms']} ms"),
        (
            "answer latency, adapter (p50 / p95)",
            f"{r['latency_adapter']['p50_ms']} / {r['latency_adapter']['p95_ms']} ms",
        ),
        (
            "one cycle, wall time",
            f"{cycle['wall_s']} s ({cycle['status']}, {cycle['counts'].get('sft_rows')} SFT rows)",
        ),
        ("  datasets + paraphrases", f"{cycle.get('datasets_s')} s"),
        ("  training (SFT + DPO)", f"{cycle.get('training_s')} s"),
        ("  evaluation gate", f"{cycle.get('evaluation_s')} s"),
        ("  load + swap", f"{cycle.get('swap_s')} s"),
        ("swap between loaded versions (p50 / max)", f"{r['swap_loaded_ms']['p50']} / {r['swap_loaded_ms']['max']} ms"),
        (
            f"Slack ack, {r['slack_ack']['n']} concurrent mentions (p50 / p99)",
            f"{r['slack_ack']['p50_ms']} / {r['slack_ack']['p99_ms']} ms",
        ),
    ]
    print("\n| What | Figure |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20, help="answers per latency sample")
    parser.add_argument("--mentions", type=int, default=50, help="concurrent Slack mentions for the ack figure")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--vllm-port", type=int, default=8301)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
