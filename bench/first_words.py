"""Time to the first visible words of an answer in Slack, side by side: Slack's chat streaming methods (now) and a
placeholder edited with chat.update once a second (before, and still the way where Slack refuses streaming).

`python -m bench.first_words` (or `make bench-first-words`) starts one real vLLM server (CPU) and two services
under uvicorn, each in a process of its own and both on that vLLM: one with `slack.streaming` on, one with it off.
Both talk to the tests' local Slack stand-in in this process, which stamps every Web API call with the time it
arrived (time.monotonic(), one clock for every process of the machine). Signed app_mention events go out one at a
time, alternating between the two services so that both see the same machine, after two warm-up questions each.
Answers are cut at `--answer-tokens` (64; the service's default is 200) to keep the run near five minutes: the
first words do not depend on it, the final render does.

For each mention, from the moment the signed event is sent:
- first words: the first call that shows the model's text (chat.startStream; or the first chat.update with text,
  which may be the final render when the answer is shorter than the update interval);
- first message: the first message the bot posts in the thread (the "Thinking…" placeholder, or the stream);
- final: the call that gives the answer its buttons (chat.stopStream, or the last chat.update).

Prints a table and writes bench/first_words.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.run import percentile
from tests.bot.slack_requests import SIGNING_SECRET, app_mention, event_callback, sign
from tests.bot.slack_stub import Call, SlackStub
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
KINDS = {"update": "placeholder + chat.update (before)", "stream": "chat.startStream / appendStream (now)"}
CHANNELS = {"update": "C_BENCH_UPDATE", "stream": "C_BENCH_STREAM"}
QUESTIONS = [
    "What should I bring to my first day at work?",
    "How do I ask for a day off?",
    "What is the capital of France?",
    "Give me three tips for a good meeting.",
    "How do I reset my password?",
    "What is a good way to learn a new programming language?",
    "Who should I talk to about my payslip?",
    "How many days are in a leap year?",
]


# --- a service, run as `python -m bench.first_words --serve KIND` ---------------------------------------------
def serve(*, kind: str, port: int, api_url: str, vllm_url: str, answer_tokens: int) -> None:
    import uvicorn

    from tuneloop.base_model import pull_default_model
    from tuneloop.service import build_service
    from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME, Settings

    data_dir = Path(tempfile.mkdtemp(prefix=f"tuneloop-bench-first-words-{kind}-"))
    model_dir, _ = pull_default_model(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME)
    settings = Settings(
        data_dir=data_dir,
        slack={
            "api_url": api_url,
            "bot_token": "xoxb-bench",
            "signing_secret": SIGNING_SECRET,
            "streaming": kind == "stream",
        },
        serving={"base_model": model_dir, "vllm_url": vllm_url, "port": port, "max_answer_tokens": answer_tokens},
        training={"nightly_enabled": False},
    )
    uvicorn.run(build_service(settings).app, host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def running_vllm() -> Iterator[str]:
    from serving.engine import VLLMProcess
    from tuneloop.base_model import pull_default_model
    from tuneloop.service import engine_config
    from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME, Settings

    model_dir, _ = pull_default_model(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME)
    vllm_port = free_port()
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="tuneloop-bench-first-words-vllm-")),
        serving={"base_model": model_dir, "vllm_port": vllm_port, "vllm_url": f"http://127.0.0.1:{vllm_port}"},
    )
    vllm = VLLMProcess(engine_config(settings))
    print("starting vLLM ...", flush=True)
    vllm.start()
    try:
        seconds = asyncio.run(vllm.wait_healthy(timeout_s=600))
        print(f"  vLLM ready in {seconds:.0f} s", flush=True)
        yield vllm.config.base_url
    finally:
        vllm.stop()


@contextmanager
def running_service(kind: str, *, api_url: str, vllm_url: str, answer_tokens: int) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.first_words", "--serve", kind, "--port", str(port)]
    command += ["--api-url", api_url, "--vllm-url", vllm_url, "--answer-tokens", str(answer_tokens)]
    log_path = Path(tempfile.gettempdir()) / f"tuneloop-bench-first-words-{kind}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    print(f"  {KINDS[kind]} on port {port} (log: {log_path})", flush=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with code {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling a starting server
        else:
            raise TimeoutError("the service was not ready in 300 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- one mention ---------------------------------------------------------------------------------------------
def mention(http: httpx.Client, stub: SlackStub, *, url: str, channel: str, question: str) -> dict[str, float]:
    """Send one signed app_mention and wait for its answer; milliseconds from sending to each milestone."""
    text = f"<@U_BOT> {question}"
    ts = stub.add_message(channel, text, user="U_BENCH")
    body = json.dumps(event_callback(app_mention(channel=channel, user="U_BENCH", text=text, ts=ts)))
    headers = {"Content-Type": "application/json", **sign(body)}
    sent = time.monotonic()
    response = http.post(f"{url}/slack/events", content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"the service answered {response.status_code}")
    final, message = stub.wait_for_answer(channel, ts, timeout=120)

    def ours(call: Call) -> bool:
        if call.args.get("channel") != channel or call.status != 200:
            return False
        return call.args.get("thread_ts") == ts or call.args.get("ts") == message.ts

    calls = [c for c in stub.calls if c.method.startswith("chat.") and c.at >= sent and ours(c)]
    first_message = calls[0]
    first_words = next(c for c in calls if _shows_answer_text(c))
    return {
        "first_words_ms": (first_words.at - sent) * 1000,
        "first_message_ms": (first_message.at - sent) * 1000,
        "final_ms": (final.at - sent) * 1000,
    }


def _shows_answer_text(call: Call) -> bool:
    if call.method in ("chat.startStream", "chat.appendStream"):
        return bool(str(call.args.get("markdown_text") or "").strip())
    # chat.update with the model's text: a partial (":writing_hand:" footer) or the final render.
    return call.method == "chat.update"


def summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"n": len(samples)}
    for key in ("first_words_ms", "first_message_ms", "final_ms"):
        values = [s[key] for s in samples]
        row[key] = {"p50": round(percentile(values, 0.5)), "p95": round(percentile(values, 0.95))}
    return row


def main_run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    stub = SlackStub().start()
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    tokens = args.answer_tokens
    try:
        with (
            running_vllm() as vllm_url,
            httpx.Client(timeout=30) as http,
            running_service("update", api_url=stub.api_url, vllm_url=vllm_url, answer_tokens=tokens) as update_url,
            running_service("stream", api_url=stub.api_url, vllm_url=vllm_url, answer_tokens=tokens) as stream_url,
        ):
            urls = {"update": update_url, "stream": stream_url}
            print(f"measuring {args.mentions} mentions each, alternating ...", flush=True)
            for index in range(-args.warmup, args.mentions):
                question = QUESTIONS[index % len(QUESTIONS)]
                for kind in KINDS:
                    one = mention(http, stub, url=urls[kind], channel=CHANNELS[kind], question=question)
                    if index >= 0:  # warm-up: the memory's index, first connections
                        samples[kind].append(one)
    finally:
        stub.stop()
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores",
        "mentions_each": args.mentions,
        "answer_tokens": tokens,
        "wall_s": round(time.monotonic() - started),
        **{kind: {"path": KINDS[kind], **summary(samples[kind])} for kind in KINDS},
    }
    for q in ("p50", "p95"):
        results[f"first_words_ratio_{q}"] = round(
            results["update"]["first_words_ms"][q] / results["stream"]["first_words_ms"][q], 2
        )
    return results


def print_table(r: dict[str, Any]) -> None:
    print(
        f"\nTime from a signed @mention to ..., {r['mentions_each']} mentions each, one at a time, answers of up to "
        f"{r['answer_tokens']} tokens ({r['machine']}, {r['wall_s']} s in all)"
    )
    print("| Path | first words p50 / p95 | first message p50 / p95 | final p50 / p95 |\n|---|---|---|---|")
    for kind in KINDS:
        row = r[kind]
        cells = [
            f"{row[key]['p50']} / {row[key]['p95']} ms" for key in ("first_words_ms", "first_message_ms", "final_ms")
        ]
        print(f"| {row['path']} | " + " | ".join(cells) + " |")
    print(f"| before / now, first words | {r['first_words_ratio_p50']}x / {r['first_words_ratio_p95']}x | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mentions", type=int, default=20, help="measured @mentions per path")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured @mentions per path first")
    parser.add_argument("--answer-tokens", type=int, default=64, help="the services' max_answer_tokens")
    parser.add_argument("--serve", choices=sorted(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--vllm-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        logging.basicConfig(level=logging.WARNING)
        serve(
            kind=args.serve,
            port=args.port,
            api_url=args.api_url,
            vllm_url=args.vllm_url,
            answer_tokens=args.answer_tokens,
        )
        return
    results = main_run(args)
    (REPO / "bench" / "first_words.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
