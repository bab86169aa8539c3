"""The active version at base speed? One run, side by side, on this machine's vLLM CPU build:

- `base, no LoRA engine`: the plain stack, a vLLM started without --enable-lora;
- `base, LoRA engine`: the base model on the engine tuneloop starts today (--enable-lora);
- `adapter through LoRA`: a LoRA adapter (rank 16 on every projection, as training makes them);
- `adapter merged, reloaded in place`: the same adapter folded into the weights (PEFT merge) and loaded into
  the no-LoRA engine with vLLM's in-place `reload_weights` (dev-mode `/collective_rpc`), no restart.

Throughput (completion tokens per second) and latency at 1 and 16 concurrent streams, fixed-length answers.
Also: the merge's time, the reload's time, and whether the merged engine answers as the LoRA path does.
Writes bench/merged.json. About 10 minutes here.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from serving.client import InferenceClient
from serving.engine import EngineConfig, VLLMProcess
from serving.merge import merge_adapter
from serving.merged import MergedEngine
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store.db import make_engine, migrate, session_scope
from tests.conftest import free_port
from tuneloop.base_model import pull_default_model
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Explain what a VPN is to a new employee.",
    "Write three tips for a good meeting.",
    "What should I pack for a business trip?",
    "Describe how to reset a forgotten password.",
]


def make_adapter(base_dir: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.trainer import DEFAULT_TARGET_MODULES

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=16, lora_alpha=32, target_modules=list(DEFAULT_TARGET_MODULES), init_lora_weights=False, lora_dropout=0.0
    )
    peft_model = get_peft_model(model, config)
    # Small B weights: the answers change, but stay language (a random full-size update would be noise).
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.02)
    peft_model.save_pretrained(out)
    return out


def engine(base_dir: Path, logs: Path, *, lora: bool) -> VLLMProcess:
    """As tuneloop starts them: the LoRA engine, or the merged engine (no LoRA slots, dev-mode reload route)."""
    return VLLMProcess(
        EngineConfig(
            model_dir=base_dir,
            served_model_name="m",
            host="127.0.0.1",
            port=free_port(),
            dtype="float32",
            max_model_len=1024,
            max_lora_rank=16,
            max_loras=2,
            cpu_kv_cache_gib=2,
            log_path=logs / ("lora.log" if lora else "plain.log"),
            lora=lora,
        )
    )


async def one(http: httpx.AsyncClient, model: str, prompt: str, tokens: int) -> tuple[float, int, str]:
    started = time.perf_counter()
    response = await http.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens,
            "temperature": 0.0,
            "ignore_eos": True,
        },
    )
    response.raise_for_status()
    body = response.json()
    text = body["choices"][0]["message"]["content"]
    return time.perf_counter() - started, int(body["usage"]["completion_tokens"]), text


async def throughput(url: str, model: str, *, streams: int, requests: int, tokens: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await one(http, model, PROMPTS[0], 4)  # warm-up
        queue = list(range(requests))
        latencies: list[float] = []
        produced = 0

        async def worker() -> None:
            nonlocal produced
            while queue:
                index = queue.pop()
                seconds, count, _ = await one(http, model, PROMPTS[index % len(PROMPTS)], tokens)
                latencies.append(seconds)
                produced += count

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        wall = time.perf_counter() - started
    return {
        "tokens_per_s": round(produced / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "requests": requests,
    }


async def greedy(url: str, model: str, tokens: int = 24) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        return [(await one(http, model, prompt, tokens))[2] for prompt in PROMPTS]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base_dir, _ = pull_default_model(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME)
    work = Path(tempfile.mkdtemp(prefix="tuneloop-merged-"))
    adapter = make_adapter(base_dir, work / "adapter")
    started = time.perf_counter()
    merged = merge_adapter(base_dir=base_dir, adapter_dir=adapter, out_dir=work / "merged")
    merge_s = time.perf_counter() - started

    lora_engine, plain_engine = engine(base_dir, work, lora=True), engine(base_dir, work, lora=False)
    results: dict[str, Any] = {"merge_s": round(merge_s, 1)}
    try:
        for process in (lora_engine, plain_engine):
            print(f"starting vLLM ({process.config.log_path.name}) ...", flush=True)
            process.start()
            await process.wait_healthy(timeout_s=600)
        lora_url, plain_url = lora_engine.config.base_url, plain_engine.config.base_url
        async with httpx.AsyncClient(base_url=lora_url, timeout=120) as http:
            loaded = await http.post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": str(adapter)})
            loaded.raise_for_status()

        rows: list[tuple[str, str, str]] = [
            ("base, no LoRA engine", plain_url, "m"),
            ("base, LoRA engine", lora_url, "m"),
            ("adapter through LoRA", lora_url, "a"),
        ]
        table: dict[str, dict[str, Any]] = {}
        for name, url, model in rows:
            table[name] = {}
            for streams in (1, 16):
                requests = args.requests if streams == 1 else args.requests * 4
                print(f"{name}: {streams} stream(s) ...", flush=True)
                table[name][str(streams)] = await throughput(
                    url, model, streams=streams, requests=requests, tokens=args.tokens
                )

        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=plain_url, timeout=600) as http:
            reloaded = await http.post(
                "/collective_rpc", json={"method": "reload_weights", "kwargs": {"weights_path": str(merged)}}
            )
            reloaded.raise_for_status()
            await http.post("/reset_prefix_cache")
        results["reload_s"] = round(time.perf_counter() - started, 2)
        name = "adapter merged, reloaded in place"
        table[name] = {}
        for streams in (1, 16):
            requests = args.requests if streams == 1 else args.requests * 4
            print(f"{name}: {streams} stream(s) ...", flush=True)
            table[name][str(streams)] = await throughput(
                plain_url, "m", streams=streams, requests=requests, tokens=args.tokens
            )
        through_lora, merged_answers = await greedy(lora_url, "a"), await greedy(plain_url, "m")
        results["same_answers_as_lora"] = sum(a == b for a, b in zip(through_lora, merged_answers, strict=True))
        results["answers_compared"] = len(PROMPTS)
        results["table"] = table
        print("a promotion and a rollback under 16 streams ...", flush=True)
        results["switch_under_load"] = await switch_under_load(
            base_dir=base_dir, adapter=adapter, lora_url=lora_url, merged_url=plain_url, work=work
        )
    finally:
        for process in (lora_engine, plain_engine):
            process.stop()
    return results


async def switch_under_load(
    *, base_dir: Path, adapter: Path, lora_url: str, merged_url: str, work: Path
) -> dict[str, Any]:
    """tuneloop's own registry over both engines: 16 streams ask the active version while it is promoted
    (LoRA swap, then the merged reload) and rolled back; counts failed, stale and wrong-weights answers."""
    url = f"sqlite:///{work / 'store.db'}"
    migrate(url)
    store = make_engine(url)
    with session_scope(store) as session:
        adapter_repo.ensure_base_version(session=session)
        adapter_repo.register_version(session=session, version="v0001", path=str(adapter), run_id=None)
    merged = MergedEngine(
        client=InferenceClient(merged_url), model_name="m", base_model_dir=base_dir, merged_dir=work / "merged-store"
    )
    registry = AdapterRegistry(
        client=InferenceClient(lora_url), engine=store, base_model_name="m", prefix="bench-", merged=merged
    )
    await registry.restore()
    await registry.wait_idle()
    question = [{"role": "user", "content": PROMPTS[0]}]

    async def ask(model: str, client: InferenceClient) -> str:
        return await client.chat(model=model, messages=question, max_tokens=16, temperature=0.0)

    await registry.load("v0001")
    expected = {v: await ask(registry.served_name(v), registry._client) for v in ("base", "v0001")}
    answers: list[tuple[str, bool, str, float]] = []
    failed = 0
    stop = asyncio.Event()

    async def stream() -> None:
        nonlocal failed
        while not stop.is_set():
            pinned = time.perf_counter()
            try:
                async with registry.use() as served:
                    text = await ask(served.model, served.endpoint or registry._client)
                answers.append((served.version, served.endpoint is not None, text, pinned))
            except Exception:  # counted: a failed request is what this measures
                failed += 1

    async def more(count: int) -> None:
        target = len(answers) + count
        while len(answers) < target:
            await asyncio.sleep(0.05)  # polling the answers the streams collect

    streams = [asyncio.create_task(stream()) for _ in range(16)]
    await more(32)
    started = time.perf_counter()
    await registry.promote("v0001")
    promote_ms = (time.perf_counter() - started) * 1000
    promoted_at = time.perf_counter()
    await registry.wait_idle()
    merged_after_s = time.perf_counter() - promoted_at
    await more(32)
    started = time.perf_counter()
    await registry.rollback()
    rollback_ms = (time.perf_counter() - started) * 1000
    rolled_at = time.perf_counter()
    await more(32)
    stop.set()
    await asyncio.gather(*streams)
    await registry.wait_idle()
    await registry._client.aclose()
    await merged.client.aclose()
    stale = sum(
        1
        for version, _m, _t, pinned in answers
        if (promoted_at < pinned < rolled_at - rollback_ms / 1000 and version != "v0001")
        or (pinned > rolled_at and version != "base")
    )
    return {
        "answers": len(answers),
        "failed": failed,
        "stale": stale,
        # Nearest to another version's own answer (batched requests round differently, so not always equal).
        "wrong_weights": sum(1 for version, _m, text, _p in answers if nearest(text, expected) not in (None, version)),
        "unattributable": sum(1 for _v, _m, text, _p in answers if nearest(text, expected) is None),
        "differs_from_single_request": sum(1 for version, _m, text, _p in answers if text != expected[version]),
        "answered_by_merged_engine": sum(1 for _v, by_merged, _t, _p in answers if by_merged),
        "promote_ms": round(promote_ms, 1),
        "merged_serving_after_s": round(merged_after_s, 1),
        "rollback_ms": round(rollback_ms, 1),
    }


def nearest(text: str, expected: dict[str, str]) -> str | None:
    """The version whose own answer shares the longest beginning with `text`; None on a tie."""
    shared = {version: _shared_beginning(text, answer) for version, answer in expected.items()}
    best = max(shared.values())
    winners = [version for version, length in shared.items() if length == best]
    return winners[0] if len(winners) == 1 else None


def _shared_beginning(one: str, other: str) -> int:
    return sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], zip(one, other, strict=False)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=6, help="requests at 1 stream (16 streams: 4x as many)")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per request (ignore_eos)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "merged.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    base = results["table"]["base, no LoRA engine"]
    print(
        f"\nmerge {results['merge_s']} s, in-place reload {results['reload_s']} s, "
        f"greedy answers equal to the LoRA path: {results['same_answers_as_lora']}/{results['answers_compared']}"
    )
    switch = results["switch_under_load"]
    print(
        f"under 16 streams: {switch['answers']} answers, {switch['failed']} failed, {switch['stale']} stale, "
        f"{switch['wrong_weights']} from other weights; promote {switch['promote_ms']} ms (merged engine serving "
        f"{switch['merged_serving_after_s']} s later), rollback {switch['rollback_ms']} ms"
    )
    print(f"{'':36} {'1 stream tok/s':>15} {'ratio':>6} {'16 streams tok/s':>17} {'ratio':>6} {'p50 @16':>8}")
    for name, row in results["table"].items():
        one_s, many = row["1"], row["16"]
        print(
            f"{name:36} {one_s['tokens_per_s']:>15} {one_s['tokens_per_s'] / base['1']['tokens_per_s']:>6.2f}"
            f" {many['tokens_per_s']:>17} {many['tokens_per_s'] / base['16']['tokens_per_s']:>6.2f}"
            f" {many['latency_p50_s']:>7}s"
        )  # fmt: skip


if __name__ == "__main__":
    main()
