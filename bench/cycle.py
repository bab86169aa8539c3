"""One cycle on a dozen corrections, before and after, in one run: wall time, its stages, recall, FLOP/s share.

`python -m bench.cycle` (or `make bench-cycle`) runs the same benchmark on two source trees, one after the other
on this machine: `--before` (a git ref, checked out into a temporary worktree; default: the last commit before
the cycle's efficiency work) and this checkout. Each starts its own vLLM and service (bench/stack.py), teaches
the twelve invented facts of tests/e2e/memory_facts.py (asked, then corrected by a reviewer), runs one cycle
through the admin API and asks the new adapter alone (vLLM directly, no memory of reviewed answers) the 36
wordings of those facts that no training file holds. The training's achieved FLOP/s is 4·N·T (N the model's
matmul weights, T the real tokens trained on, see training/trainer.py) over the SFT seconds, as a share of this
machine's measured fp32 matmul FLOP/s (torch, 2048², the trainer's thread count).
Prints a Markdown table and writes bench/cycle.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The last commit before the cycle's efficiency work (padding-free batches, the stopping rule, ...).
BEFORE = "f8b9ace"


def matmul_flops(threads: int | None, *, size: int = 2048, repeats: int = 20) -> float:
    """This machine's fp32 matmul FLOP/s, as torch reaches it with `threads` threads (best of three)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = 0.0
    for _ in range(3):
        a @ b  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started))
    return best


def matmul_weights(model_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    weights = sum(p.numel() for p in model.parameters())
    return weights if model.config.tie_word_embeddings else weights - model.get_input_embeddings().weight.numel()


def real_tokens(model_dir: Path, sft_path: Path) -> int:
    """Tokens of one pass over an SFT file, as the chat template writes its rows (no padding)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    total = 0
    for line in sft_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        total += len(
            tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
    return total


# --- the child: runs inside one source tree (PYTHONPATH), prints its figures as JSON ----------------------------
async def measure_tree(port: int, vllm_port: int) -> dict[str, Any]:
    import httpx

    from bench.stack import run_cycle, running_stack, teach
    from tests.e2e.memory_facts import FACTS

    async with running_stack(port=port, vllm_port=vllm_port) as stack:
        await teach(stack.http, [(f.question, f.answer) for f in FACTS])
        run, wall_s = await run_cycle(stack.http)
        version = run.get("adapter_version")
        if version and run["status"] != "succeeded":
            # A rejected candidate is unloaded: an admin's promotion (audited) loads it, to measure it all the same.
            (await stack.http.post("/admin/promote", json={"version": version})).raise_for_status()
        unseen = [(p, f.key) for f in FACTS for p in f.paraphrases]
        run_dir = stack.settings.runs_dir / f"run-{run['id']:04d}"
        training_text = "".join(p.read_text(encoding="utf-8").lower() for p in run_dir.glob("*.jsonl"))
        leaked = [q for q, _ in unseen if q.lower() in training_text]
        hits = 0
        served = f"{stack.settings.serving.adapter_prefix}{version}"
        async with httpx.AsyncClient(base_url=stack.settings.vllm_base_url, timeout=120) as vllm:
            for question, key in unseen:
                body = {
                    "model": served,
                    "messages": [
                        {"role": "system", "content": stack.settings.serving.system_prompt},
                        {"role": "user", "content": question},
                    ],
                    "max_tokens": 64,
                    "temperature": 0,
                }
                reply = (await vllm.post("/v1/chat/completions", json=body)).json()
                hits += key.lower() in reply["choices"][0]["message"]["content"].lower()
        return {
            "status": run["status"],
            "wall_s": wall_s,
            "timings": run["timings"],
            "counts": {k: run["counts"].get(k) for k in ("sft_rows", "dpo_rows", "sft_examples")},
            "training": run.get("metrics") or {},
            "sft_path": str(run_dir / "sft.jsonl"),
            "recall": round(hits / len(unseen), 3),
            "leaked": leaked,
            "model_dir": str(stack.settings.base_model_dir),
        }


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(measure_tree(args.port, args.vllm_port))
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))


# --- the parent ------------------------------------------------------------------------------------------------
def run_tree(tree: Path, *, port: int, vllm_port: int, label: str) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"tuneloop-cycle-{label}-")) / "result.json"
    print(f"{label}: one cycle on a dozen corrections ({tree}) ...", flush=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--out", str(out)]
    command += ["--port", str(port), "--vllm-port", str(vllm_port)]
    subprocess.run(command, cwd=tree, env=env, check=True)
    return dict(json.loads(out.read_text()))


def summarise(result: dict[str, Any], *, weights: int, peak: float, model_dir: Path) -> dict[str, Any]:
    metrics = result.get("training") or {}
    sft = metrics.get("training", {}).get("sft") or metrics.get("sft") or {}
    epochs = sft.get("epochs") or sft.get("max_epochs") or 8
    # The same base model in both trees; the before tree's own folder is gone with its worktree.
    tokens = sft.get("tokens") or real_tokens(model_dir, Path(result["sft_path"])) * epochs
    seconds = float(sft.get("seconds") or 0)
    achieved = 4 * weights * tokens / seconds if seconds else 0.0
    return {
        **result,
        "sft_epochs": epochs,
        "sft_tokens": tokens,
        "sft_seconds": seconds,
        "achieved_flops": achieved,
        "flops_share": round(achieved / peak, 3) if peak else None,
    }


def print_table(before: dict[str, Any], after: dict[str, Any], peak: float) -> None:
    def ratio(key: str, source: str = "timings") -> str:
        b = (before[source] if source else before).get(key)
        a = (after[source] if source else after).get(key)
        if not b or a is None:
            return f"{b} | {a} |"
        return f"{b} s | {a} s | {a / b:.2f}"

    print(f"\nthis machine: {peak / 1e9:.0f} GFLOP/s fp32 matmul (torch, 2048²)\n")
    print("| | before | after | after / before |\n|---|---|---|---|")
    print(f"| one cycle, wall | {ratio('wall_s', '')} |")
    print(f"| datasets + paraphrases | {ratio('datasets_s')} |")
    print(f"| training (SFT + DPO) | {ratio('training_s')} |")
    print(f"| evaluation gate | {ratio('evaluation_s')} |")
    print(f"| SFT epochs | {before['sft_epochs']} | {after['sft_epochs']} | |")
    print(f"| SFT rows | {before['counts']['sft_rows']} | {after['counts']['sft_rows']} | |")
    for name, key in (("SFT achieved FLOP/s, share of matmul peak", "flops_share"),):
        print(f"| {name} | {before[key]:.0%} | {after[key]:.0%} | |")
    print(f"| recall of 36 unseen wordings, adapter alone | {before['recall']:.0%} | {after['recall']:.0%} | |")
    print(f"| run status | {before['status']} | {after['status']} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE, help="git ref of the 'before' tree")
    parser.add_argument("--port", type=int, default=8310)
    parser.add_argument("--vllm-port", type=int, default=8311)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    worktree = Path(tempfile.mkdtemp(prefix="tuneloop-before-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.before], cwd=REPO, check=True)
    try:
        (worktree / "var").symlink_to(REPO / "var", target_is_directory=True)  # the same base model files
        from tuneloop.settings import Settings

        threads = Settings().training.cpu_threads
        peak_start = matmul_flops(threads)
        before = run_tree(worktree, port=args.port, vllm_port=args.vllm_port, label="before")
        after = run_tree(REPO, port=args.port, vllm_port=args.vllm_port, label="after")
        peak = max(peak_start, matmul_flops(threads))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=False)
    report(before, after, peak=peak, before_ref=args.before)


def report(before: dict[str, Any], after: dict[str, Any], *, peak: float, before_ref: str) -> None:
    model_dir = Path(after["model_dir"])
    weights = matmul_weights(model_dir)
    before = summarise(before, weights=weights, peak=peak, model_dir=model_dir)
    after = summarise(after, weights=weights, peak=peak, model_dir=model_dir)
    results = {"machine": f"{os.cpu_count()} cores", "peak_flops": peak, "before_ref": before_ref}
    results |= {"before": before, "after": after}
    (REPO / "bench" / "cycle.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(before, after, peak)


if __name__ == "__main__":
    main()
