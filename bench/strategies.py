"""From the base model on the whole history, or continued from the active adapter on what is new?

`python -m bench.strategies` teaches five facts (A) and trains v0001 from the base model. It then teaches
five new facts (B) and, from the same starting point (v0001 active), trains one candidate each way:
- from_base: a fresh LoRA on the whole curated history (A and B);
- continue: v0001 trained further on B alone.
Each candidate is measured on questions it never saw (one new wording per fact, which the training files
are checked not to contain), by whether the answer holds the fact's key term, and by the gate's own
scores. Prints a Markdown table and writes bench/strategies.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from bench.run import FACTS as FACTS_A
from bench.stack import REPO, Stack, run_cycle, running_stack, teach

FACTS_B = [
    ("What is the door code for the bike room?", "The bike room door code is 5831."),
    ("Which printer should I use on the third floor?", "On the third floor, use the printer named Heron."),
    ("Who runs the onboarding sessions?", "Onboarding sessions are run by Priya Natarajan."),
    ("Where do I book a meeting room?", "Book meeting rooms in the Roomly app."),
    ("What is the name of the internal wiki?", "Our internal wiki is called Lighthouse."),
]
# New wordings (question, key term), one per fact; each keeps one content word of the fact (see README).
UNSEEN_A = [
    ("Tell me the guest Wi-Fi password, please.", "bluepelican42"),
    ("Where in Slack do I report an outage?", "ops-fire"),
    ("Where is our Berlin office located?", "Kastanienallee"),
    ("Who has to approve my travel expenses?", "Kowalski"),
    ("When does payroll get paid each month?", "27"),
]
UNSEEN_B = [
    ("What's the code to open the bike room?", "5831"),
    ("Which printer do I print to on the third floor?", "Heron"),
    ("Who leads the onboarding sessions for new hires?", "Natarajan"),
    ("How can I book a meeting room?", "Roomly"),
    ("What is our internal wiki called?", "Lighthouse"),
]


async def recall(http: httpx.AsyncClient, probes: list[tuple[str, str]]) -> float:
    """Share of the active version's answers that hold the fact's key term."""
    hits = 0
    for question, key in probes:
        answer = (await http.post("/api/ask", json={"question": question})).json()["answer"]
        hits += key.lower() in answer.lower()
    return round(hits / len(probes), 2)


def leaked(run_dir: Path, probes: list[tuple[str, str]]) -> list[str]:
    """Probe questions that made it into a run's training files (they would not be unseen)."""
    text = "".join(p.read_text(encoding="utf-8").lower() for p in run_dir.glob("*.jsonl"))
    return [q for q, _ in probes if q.lower() in text]


async def promote(http: httpx.AsyncClient, version: str) -> None:
    (await http.post("/admin/promote", json={"version": version})).raise_for_status()


async def measure(stack: Stack, version: str) -> dict[str, float]:
    await promote(stack.http, version)
    return {"recall_a": await recall(stack.http, UNSEEN_A), "recall_b": await recall(stack.http, UNSEEN_B)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with running_stack(port=args.port, vllm_port=args.vllm_port, memory={"enabled": False}) as stack:
        http, runs_dir = stack.http, stack.settings.runs_dir
        results["base"] = await measure(stack, "base")

        await teach(http, FACTS_A)
        print("cycle 1: facts A, from the base model ...", flush=True)
        first, first_s = await run_cycle(http)
        v1 = first["adapter_version"]
        results["v0001"] = {"status": first["status"], "wall_s": first_s, **await measure(stack, v1)}

        await teach(http, FACTS_B)
        for strategy in ("from_base", "continue"):
            await promote(http, v1)  # both start from v0001 active
            stack.settings.training.strategy = strategy  # the running service's settings object
            print(f"cycle 2: facts B, {strategy} ...", flush=True)
            run, wall_s = await run_cycle(http)
            gate = run["metrics"].get("gate", {})
            results[strategy] = {
                "version": run["adapter_version"],
                "status": run["status"],
                "wall_s": wall_s,
                "training_s": run["timings"].get("training_s"),
                "sft_rows": run["counts"].get("sft_rows"),
                "gate_facts": gate.get("candidate", {}).get("facts"),
                "gate_regression": gate.get("candidate", {}).get("regression"),
                "gate_active": gate.get("active"),
                "leaked_probes": leaked(runs_dir / f"run-{run['id']:04d}", UNSEEN_A + UNSEEN_B),
                # A rejected candidate is promoted here on purpose: the comparison needs its answers.
                **await measure(stack, run["adapter_version"]),
            }
    return results


def print_table(r: dict[str, Any]) -> None:
    print(
        "\n| Strategy | unseen wordings, facts A (old) | facts B (new) | gate: held-out facts | "
        "gate: regression | SFT rows | training |"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| base model | {r['base']['recall_a']} | {r['base']['recall_b']} | | | | |")
    print(f"| v0001 (A, from base) | {r['v0001']['recall_a']} | {r['v0001']['recall_b']} | | | | |")
    for name in ("from_base", "continue"):
        s = r[name]
        print(
            f"| {name} ({s['status']}) | {s['recall_a']} | {s['recall_b']} | {s['gate_facts']} | "
            f"{s['gate_regression']} | {s['sft_rows']} | {s['training_s']} s |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8310)
    parser.add_argument("--vllm-port", type=int, default=8311)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    (REPO / "bench" / "strategies.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
