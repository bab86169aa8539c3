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
import time
from typing import Any

import httpx

from bench.stack import REPO, run_cycle, running_stack, teach
from tests.bot.slack_requests import SIGNING_SECRET, app_mention, event_callback, sign
from tests.bot.slack_stub import SlackStub

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
        response = await http.post("/api/ask", json={"question": QUESTIONS[i % len(QUESTIONS)]})
        response.raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(samples)), "p95_ms": round(percentile(samples, 0.95)), "n": count}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # Slack cannot be reached from here: the bot talks to the tests' local stand-in for its Web API.
    stub = SlackStub().start()
    slack = {"api_url": stub.api_url, "bot_token": "xoxb-bench", "signing_secret": SIGNING_SECRET}
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "model": "SmolLM2-135M-Instruct float32"}
    try:
        async with running_stack(
            # The memory of reviewed answers off: these figures are the adapter's (bench/memory.py has the memory's).
            port=args.port,
            vllm_port=args.vllm_port,
            slack=slack,
            memory={"enabled": False},
        ) as stack:
            http = stack.http
            results["time_to_ready_s"] = stack.time_to_ready_s
            print("measuring answer latency (base) ...", flush=True)
            results["latency_base"] = await latencies(http, args.requests)

            await teach(http, FACTS)
            print("running one tuning cycle ...", flush=True)
            run, wall_s = await run_cycle(http)
            results["cycle"] = {"status": run["status"], "wall_s": wall_s, **run["timings"], "counts": run["counts"]}
            gate = run["metrics"].get("gate", {})
            results["gate"] = {k: gate.get(k) for k in ("candidate", "active", "items", "reason")}

            print("measuring answer latency (adapter) ...", flush=True)
            results["latency_adapter"] = await latencies(http, args.requests)

            swaps = []
            for version in ["base", "v0001"] * 5:
                response = await http.post("/admin/promote", json={"version": version})
                swaps.append(response.json()["swap_ms"])
            results["swap_loaded_ms"] = {"p50": round(statistics.median(swaps), 2), "max": round(max(swaps), 2)}
            results["swap_first_load_ms"] = round(run["timings"].get("swap_s", 0) * 1000, 1)

            print(f"measuring Slack ack latency for {args.mentions} concurrent mentions ...", flush=True)
            results["slack_ack"] = await slack_ack_latency(http, stub, args.mentions)
    finally:
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


def _before_after(gate: dict[str, Any], kind: str) -> str:
    active, candidate = (gate.get("active") or {}).get(kind), (gate.get("candidate") or {}).get(kind)
    return f"{active} -> {candidate}" if active is not None else "n/a"


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
        ("gate: held-out fact paraphrases, ROUGE-L (active -> candidate)", _before_after(r["gate"], "facts")),
        ("gate: regression set, MiniLM similarity (active -> candidate)", _before_after(r["gate"], "regression")),
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
