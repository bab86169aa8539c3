"""Slack ack latency, side by side: tuneloop's service and a plain Bolt app, under the same burst of mentions.

`python -m bench.acks` needs no vLLM: the service's model URL points at a port with nothing listening, so
every mention is acked and its answer then fails (the bot says the model is unavailable), which costs the
service what a real failure costs it but no model time. Each app runs under uvicorn in a process of its
own; both talk to the tests' local Slack stand-in (in this process) and get the same signed app_mention
events, `--mentions` at once, `--rounds` times after a warm-up, over connections opened beforehand. The
figure is how long Slack would wait for each ack: from writing the request to reading the response's status
and headers. Prints a table and writes bench/acks.json. Not a test: it asserts nothing.
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
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from bench.run import percentile
from tests.bot.slack_requests import SIGNING_SECRET, app_mention, event_callback, sign
from tests.bot.slack_stub import SlackStub
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
CHANNEL = "C_BENCH"
KINDS = {"bolt": "plain Bolt app", "service": "tuneloop service"}


# --- the two apps, each run as `python -m bench.acks --serve KIND` --------------------------------------------
def serve_plain_bolt(*, port: int, api_url: str) -> None:
    """A minimal AsyncApp: one app_mention listener that acks, mounted on FastAPI as the service mounts its own."""
    import uvicorn
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncAck, AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    bolt = AsyncApp(
        client=AsyncWebClient(token="xoxb-bench", base_url=api_url),
        signing_secret=SIGNING_SECRET,
        process_before_response=False,
    )

    @bolt.event("app_mention")
    async def on_mention(ack: AsyncAck) -> None:
        await ack()

    handler = AsyncSlackRequestHandler(bolt)
    api = FastAPI()

    @api.post("/slack/events")
    async def events(request: Request) -> Response:
        return await handler.handle(request)

    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning")


def serve_tuneloop(*, port: int, api_url: str) -> None:
    import uvicorn

    from tuneloop.service import build_service
    from tuneloop.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="tuneloop-bench-acks-"))
    settings = Settings(
        data_dir=data_dir,
        slack={"api_url": api_url, "bot_token": "xoxb-bench", "signing_secret": SIGNING_SECRET},
        serving={
            "base_model": data_dir / "no-model",
            "vllm_url": f"http://127.0.0.1:{free_port()}",  # nothing listens: acks only
            "port": port,
        },
        training={"nightly_enabled": False},
    )
    uvicorn.run(build_service(settings).app, host="127.0.0.1", port=port, log_level="warning")


# --- the load ------------------------------------------------------------------------------------------------
def signed_request(port: int, stub: SlackStub, index: int) -> bytes:
    """One signed app_mention event as the raw HTTP/1.1 request Slack would send."""
    text = f"<@U_BOT> question {index}"
    ts = stub.add_message(CHANNEL, text, user="U_B")
    body = json.dumps(event_callback(app_mention(channel=CHANNEL, user="U_B", text=text, ts=ts))).encode()
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **sign(body.decode()),
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST /slack/events HTTP/1.1\r\n{head}\r\n".encode() + body


async def burst(port: int, stub: SlackStub, count: int) -> list[float]:
    """`count` signed app_mention events at once; the milliseconds each waited for its ack.

    The requests are built and their connections opened first, and the client is raw asyncio streams, so
    that the figure is the app's time to ack rather than an HTTP client's own work under a burst.
    """
    requests = [signed_request(port, stub, index) for index in range(count)]
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]

    async def one(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
        started = time.perf_counter()
        writer.write(request)
        status = await reader.readline()
        await reader.readuntil(b"\r\n\r\n")  # the ack is in once its status and headers are
        elapsed = (time.perf_counter() - started) * 1000
        writer.close()
        if b" 200 " not in status:
            raise RuntimeError(f"the app answered {status!r}")
        return elapsed

    return list(await asyncio.gather(*(one(r, *c) for r, c in zip(requests, connections, strict=True))))


async def wait_listening(http: httpx.AsyncClient, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}")
        try:
            await http.get("/healthz")
            return
        except httpx.TransportError:
            await asyncio.sleep(0.2)  # polling a starting server
    raise TimeoutError(f"the app did not listen within {timeout_s:.0f}s")


async def measure(kind: str, *, stub: SlackStub, mentions: int, rounds: int) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", "bench.acks", "--serve", kind, "--port", str(port), "--api-url", stub.api_url]
    log_path = Path(tempfile.gettempdir()) / f"tuneloop-bench-acks-{kind}.log"
    with log_path.open("wb") as log_file:  # the service logs every failed answer: keep them out of the table
        process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    print(f"  {KINDS[kind]} on port {port} (log: {log_path})", flush=True)
    samples: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            await wait_listening(http, process)
        await burst(port, stub, 5)  # warm-up: Bolt's auth.test, imports, the database's first connections
        await asyncio.to_thread(stub.settle, 1.0)
        for _ in range(rounds):
            samples += await burst(port, stub, mentions)
            # Each round starts with the app idle again (the service's answers failed and were reported).
            await asyncio.to_thread(stub.settle, 1.0)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "app": KINDS[kind],
        "p50_ms": round(percentile(samples, 0.5), 1),
        "p99_ms": round(percentile(samples, 0.99), 1),
        "max_ms": round(max(samples), 1),
        "n": len(samples),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stub = SlackStub().start()
    try:
        results: dict[str, Any] = {
            "machine": f"{os.cpu_count()} cores",
            "mentions_at_once": args.mentions,
            "rounds": args.rounds,
        }
        for kind in ("bolt", "service"):
            print(f"measuring {KINDS[kind]} ...", flush=True)
            results[kind] = await measure(kind, stub=stub, mentions=args.mentions, rounds=args.rounds)
        results["ratio_p50"] = round(results["service"]["p50_ms"] / results["bolt"]["p50_ms"], 2)
        results["ratio_p99"] = round(results["service"]["p99_ms"] / results["bolt"]["p99_ms"], 2)
    finally:
        stub.stop()
    return results


def print_table(r: dict[str, Any]) -> None:
    print(f"\nSlack ack, {r['mentions_at_once']} concurrent signed @mentions x {r['rounds']} rounds")
    print("| App | p50 | p99 | max |\n|---|---|---|---|")
    for kind in ("bolt", "service"):
        row = r[kind]
        print(f"| {row['app']} | {row['p50_ms']} ms | {row['p99_ms']} ms | {row['max_ms']} ms |")
    print(f"| service / Bolt | {r['ratio_p50']}x | {r['ratio_p99']}x | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mentions", type=int, default=50, help="signed @mentions sent at once")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per app (samples are pooled)")
    parser.add_argument("--serve", choices=sorted(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        logging.basicConfig(level=logging.WARNING)
        serve = serve_plain_bolt if args.serve == "bolt" else serve_tuneloop
        serve(port=args.port, api_url=args.api_url)
        return
    results = asyncio.run(main_async(args))
    (REPO / "bench" / "acks.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
