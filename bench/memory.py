"""How a correction reaches answers: the memory of reviewed answers, measured.

`python -m bench.memory` (or `make bench-memory`) prints, and writes to bench/memory.json:

1. Calibration, per similarity threshold, with the bundled MiniLM: the share of unseen paraphrases of corrected
   questions whose nearest entry is the right one and at least that similar (hits), the share whose nearest entry
   is another fact's (wrong hits), and the share of unrelated questions that reach an entry at all (false hits):
   general questions, and company questions no entry covers (near misses).
2. Lookup latency (embedding the question included) at 10,000 and 100,000 entries, on a real SQLite store.
3. With the real vLLM server and no retrain: a dozen facts corrected by a reviewer, then every unseen paraphrase
   asked, with reviewed answers only in the prompt and with direct answers on; recall is the share of answers
   that carry the fact. General questions must answer exactly as before the corrections; near misses must not
   come back with a fact. And the latency the lookup adds to an answer.

With `--cycle`, one tuning cycle follows on those corrections, and the paraphrases absent from its training files
are asked again, with the memory and with the adapter alone (recall, and answers that carry another question's
fact). Not a test: it asserts nothing. About 15 minutes on 2 cores, 45 with `--cycle`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from sqlalchemy import create_engine, insert, make_url, text
from sqlmodel import select

from bench.stack import REPO, Stack, run_cycle, running_stack
from serving.api.deps import Services
from serving.memory import MemorySettings, ReviewedMemory
from store.db import make_engine, migrate, session_scope
from store.memory import Approval, paraphrases_of, remember
from store.models import MemoryEntry, MemoryWording, utcnow
from tests.e2e.memory_facts import FACTS, GENERAL, NEAR_MISSES, Fact
from training.embedder import DIMENSIONS, embed

THRESHOLDS = [round(0.40 + 0.05 * i, 2) for i in range(11)]
RESULTS = REPO / "bench" / "memory.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def calibrate(wordings: list[list[str]] | None = None) -> list[dict[str, Any]]:
    """Per threshold; `wordings`: each fact's stored wordings (default: only the question a reviewer corrected)."""
    wordings = wordings or [[fact.question] for fact in FACTS]
    owners = np.array([i for i, texts in enumerate(wordings) for _ in texts])
    matrix = embed([text for texts in wordings for text in texts])

    def per_fact(questions: list[str]) -> npt.NDArray[np.float32]:
        scores = embed(questions) @ matrix.T  # a fact's score is that of its nearest wording
        return np.stack([scores[:, owners == i].max(1) for i in range(len(FACTS))], axis=1)

    paraphrases = [p for fact in FACTS for p in fact.paraphrases]
    truth = np.array([i for i, fact in enumerate(FACTS) for _ in fact.paraphrases])
    para_scores = per_fact(paraphrases)
    best, top = para_scores.argmax(1), para_scores.max(1)
    general_top = per_fact(GENERAL).max(1)
    near_top = per_fact(NEAR_MISSES).max(1)
    rows = []
    for t in THRESHOLDS:
        rows.append(
            {
                "threshold": t,
                "hit_rate": round(float(((top >= t) & (best == truth)).mean()), 3),
                "wrong_hit_rate": round(float(((top >= t) & (best != truth)).mean()), 3),
                "false_hit_rate_general": round(float((general_top >= t).mean()), 3),
                "false_hit_rate_near_miss": round(float((near_top >= t).mean()), 3),
            }
        )
    return rows


@contextmanager
def scratch_database(postgres: str | None) -> Iterator[str]:
    """A new database: a SQLite file, or (`postgres`: a server's URL) a PostgreSQL database dropped afterwards."""
    if postgres is None:
        with tempfile.TemporaryDirectory(prefix="tuneloop-memory-") as folder:
            yield f"sqlite:///{Path(folder) / 'memory.db'}"
        return
    name = f"tuneloop_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(make_url(postgres).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def lookup_latency(
    entries: int, queries: list[str], *, postgres: str | None = None, pgvector: bool = False
) -> dict[str, Any]:
    """p50/p95 of one lookup (the question's embedding and the search) over `entries` stored entries."""
    with scratch_database(postgres) as url:
        migrate(url)
        engine = make_engine(url)
        rng = np.random.default_rng(7)
        now = utcnow()
        with session_scope(engine) as session:
            for start in range(0, entries, 10_000):
                count = min(10_000, entries - start)
                vectors = rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                ids = range(start + 1, start + count + 1)
                session.execute(
                    insert(MemoryEntry),
                    [
                        {
                            "id": i,
                            "answer": f"answer {i}",
                            "approved_by": "U_BENCH",
                            "approved_at": now,
                            "status": "active",
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i in ids
                    ],
                )
                session.execute(
                    insert(MemoryWording),
                    [
                        {"entry_id": i, "text": f"question {i}", "embedding": v.tobytes(), "created_at": now}
                        for i, v in zip(ids, vectors, strict=True)
                    ],
                )
            session.commit()
        started = time.perf_counter()
        memory = ReviewedMemory(engine=engine, settings=MemorySettings(pgvector=pgvector))
        memory.recall("warm up")  # loads the index and the embedder (and fills pgvector's column and index)
        load_s = time.perf_counter() - started
        samples = []
        for question in queries * 3:
            started = time.perf_counter()
            memory.recall(question)
            samples.append((time.perf_counter() - started) * 1000)
        engine.dispose()
    return {
        "entries": entries,
        "backend": "sqlite" if postgres is None else f"postgresql, {memory.search_backend}",
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(percentile(samples, 0.95), 1),
        "first_load_s": round(load_s, 2),
    }


async def ask(http: httpx.AsyncClient, question: str) -> dict[str, Any]:
    response = await http.post("/api/ask", json={"question": question})
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def _has_fact(text: str) -> bool:
    return any(fact.key in text.lower() for fact in FACTS)


async def recall_of_paraphrases(http: httpx.AsyncClient, paraphrases: list[tuple[Fact, str]]) -> dict[str, Any]:
    """Recall (the fact's key in the answer) and mix-ups (another fact's key instead of its own)."""
    recalled, mixed = 0, []
    for fact, paraphrase in paraphrases:
        text = (await ask(http, paraphrase))["answer"].lower()
        recalled += fact.key in text
        if fact.key not in text and any(other.key in text for other in FACTS if other is not fact):
            mixed.append(paraphrase)
    return {"recall": round(recalled / len(paraphrases), 3), "mixups": len(mixed), "n": len(paraphrases)}


async def after_one_cycle(stack: Stack) -> dict[str, Any]:
    """One cycle on the corrections taught, then recall with the memory and with the adapter alone."""
    http, memory = stack.http, stack.settings.memory
    print("running one tuning cycle on the corrections ...", flush=True)
    run, wall_s = await run_cycle(http)
    trained = "\n".join(
        path.read_text().lower() for path in (stack.settings.runs_dir / f"run-{run['id']:04d}").glob("*.jsonl")
    )
    unseen = [(f, p) for f in FACTS for p in f.paraphrases if p.lower() not in trained]
    results: dict[str, Any] = {
        "run": {"status": run["status"], "wall_s": wall_s, "gate": run["metrics"].get("gate", {})},
        "unseen_paraphrases": len(unseen),
    }
    print(f"asking {len(unseen)} paraphrases absent from the training files, with and without the memory ...")
    memory.direct_answers = True
    results["with_memory"] = await recall_of_paraphrases(http, unseen)
    memory.enabled = False
    results["adapter_alone"] = await recall_of_paraphrases(http, unseen)
    memory.enabled = True
    return results


SYSTEM = "You are a helpful assistant for the employees of this company. Answer briefly."


def _formatted(name: str, question: str, fact: Fact) -> list[dict[str, str]]:
    """The ways a reviewed answer can enter a prompt; "system note + exchange" is what serving does."""
    system = {"role": "system", "content": SYSTEM}
    exchange = [{"role": "user", "content": fact.question}, {"role": "assistant", "content": fact.answer}]
    user = {"role": "user", "content": question}
    if name == "exchange":
        return [system, *exchange, user]
    if name == "system note":
        note = (
            f"A reviewer approved this answer to a similar question.\nQuestion: {fact.question}\nAnswer: {fact.answer}"
        )
        return [{"role": "system", "content": f"{SYSTEM}\n\n{note}"}, user]
    if name == "in the question":
        return [
            system,
            {"role": "user", "content": f'Reviewed answer to "{fact.question}": {fact.answer}\n\n{question}'},
        ]
    return [{"role": "system", "content": f"{SYSTEM}\n\nReviewed answer: {fact.answer}"}, *exchange, user]


async def prompt_formats(http: httpx.AsyncClient, base_model: str) -> dict[str, Any]:
    """Each format with the nearest fact given for every paraphrase and every near miss (no threshold): how often
    the base model carries the fact, where it should and where it should not."""
    entries = embed([fact.question for fact in FACTS])

    def nearest(question: str) -> Fact:
        return FACTS[int((entries @ embed([question])[0]).argmax())]

    async def complete(messages: list[dict[str, str]]) -> str:
        body = {"model": base_model, "messages": messages, "max_tokens": 60, "temperature": 0}
        response = await http.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"]).lower()

    results = {}
    paraphrases = [(fact, p) for fact in FACTS for p in fact.paraphrases]
    for name in ("exchange", "system note", "in the question", "system note + exchange"):
        print(f"prompt format: {name} ...", flush=True)
        recalled = [fact.key in await complete(_formatted(name, p, nearest(p))) for fact, p in paraphrases]
        copied = [nearest(q).key in await complete(_formatted(name, q, nearest(q))) for q in NEAR_MISSES]
        results[name] = {
            "recall": round(sum(recalled) / len(recalled), 3),
            "near_miss_copied": round(sum(copied) / len(copied), 3),
        }
    return results


async def ask_every_wording(http: httpx.AsyncClient, before: dict[str, str]) -> dict[str, Any]:
    """Every unseen paraphrase, the near misses and the general questions, as the service stands now."""
    recalled, direct_count, latencies, missed = 0, 0, [], []
    for fact in FACTS:
        for paraphrase in fact.paraphrases:
            answer = await ask(http, paraphrase)
            hit = fact.key in answer["answer"].lower()
            recalled += hit
            memory = answer.get("memory") or {}
            direct_count += memory.get("mode") == "direct"
            latencies.append(answer["latency_ms"])
            if not hit:
                missed.append({"question": paraphrase, "memory": memory.get("mode"), "answer": answer["answer"][:80]})
    near = [await ask(http, q) for q in NEAR_MISSES]
    general = [await ask(http, q) for q in GENERAL]
    return {
        "recall": round(recalled / len(latencies), 3),
        "direct_share": round(direct_count / len(latencies), 3),
        "answer_p50_ms": round(statistics.median(latencies)),
        "near_miss_with_a_fact": round(sum(_has_fact(a["answer"]) for a in near) / len(near), 3),
        "general_unchanged": round(
            sum(a["answer"] == before[q] for a, q in zip(general, GENERAL, strict=True)) / len(GENERAL), 3
        ),
        "missed": missed,
    }


def stored_wordings(services: Services) -> list[list[str]]:
    """Each fact's wordings as the memory stores them (the corrected question and the paraphrases written)."""
    with session_scope(services.engine) as session:
        entries = session.exec(select(MemoryEntry)).all()
        by_answer = {entry.answer: entry.id for entry in entries}
        written = paraphrases_of(session=session, entry_ids=[e.id for e in entries if e.id is not None])
    return [[fact.question, *written.get(by_answer[fact.answer] or 0, [])] for fact in FACTS]


async def recall_without_retrain(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with running_stack(port=args.port, vllm_port=args.vllm_port) as stack:
        http, memory, services = stack.http, stack.settings.memory, stack.services
        assert services is not None and services.memory.paraphraser is not None
        paraphraser = services.memory.paraphraser
        results["prompt_formats"] = await prompt_formats(http, stack.settings.serving.served_model_name)
        before = {q: (await ask(http, q))["answer"] for q in GENERAL}
        # Before and after in one run: the facts are taught with paraphrasing off, measured, then paraphrased.
        count, paraphraser.count = paraphraser.count, 0
        for fact in FACTS:
            asked = await ask(http, fact.question)
            corrected = await http.post(
                f"/api/interactions/{asked['interaction_id']}/corrections", json={"text": fact.answer}
            )
            corrected.raise_for_status()
        for mode, direct in (("prompt_only", False), ("direct_on", True)):
            memory.direct_answers = direct  # the running service's own settings object
            print(f"asking {sum(len(f.paraphrases) for f in FACTS)} unseen paraphrases ({mode}) ...", flush=True)
            results[mode] = await ask_every_wording(http, before)
        paraphraser.count = count
        print(f"paraphrasing the {len(FACTS)} reviewed questions ({count} each, one request each) ...", flush=True)
        with session_scope(services.engine) as session:
            entry_ids = [e.id for e in session.exec(select(MemoryEntry)).all() if e.id is not None]
        started = time.perf_counter()
        await paraphraser.paraphrases_of(entry_ids)
        paraphrase_s = time.perf_counter() - started
        wordings = stored_wordings(services)
        unseen = {p.lower() for fact in FACTS for p in fact.paraphrases}
        results["paraphrases"] = {
            "per_entry_s": round(paraphrase_s / len(FACTS), 2),
            "stored_per_entry": round(statistics.mean(len(w) - 1 for w in wordings), 1),
            "unseen_among_them": sum(text.lower() in unseen for texts in wordings for text in texts[1:]),
            "examples": {texts[0]: texts[1:] for texts in wordings[:3]},
        }
        results["calibration_with_paraphrases"] = calibrate(wordings)
        for mode, direct in (("prompt_only_paraphrased", False), ("direct_on_paraphrased", True)):
            memory.direct_answers = direct
            print(f"asking the unseen paraphrases again ({mode}) ...", flush=True)
            results[mode] = await ask_every_wording(http, before)
        if args.cycle:
            results["after_one_cycle"] = await after_one_cycle(stack)
    return results


def retrieval_added_ms() -> dict[str, float]:
    """What one lookup adds to an answer with the dozen facts stored (in-process, the embedder warm)."""
    with tempfile.TemporaryDirectory(prefix="tuneloop-memory-") as folder:
        url = f"sqlite:///{Path(folder) / 'memory.db'}"
        migrate(url)
        engine = make_engine(url)
        memory = ReviewedMemory(engine=engine, settings=MemorySettings())
        with session_scope(engine) as session:
            vectors = embed([fact.question for fact in FACTS])
            for fact, vector in zip(FACTS, vectors, strict=True):
                approval = Approval(
                    answer=fact.answer,
                    approved_by="U_BENCH",
                    correction_id=None,
                    wording=fact.question,
                    embedding=vector.tobytes(),
                    interaction_id=None,
                )
                remember(session=session, entry=None, approval=approval)  # (entry, new wording)
            session.commit()
        memory.recall("warm up")
        samples = []
        for question in [p for fact in FACTS for p in fact.paraphrases] + GENERAL:
            started = time.perf_counter()
            memory.recall(question)
            samples.append((time.perf_counter() - started) * 1000)
        engine.dispose()
    return {"p50_ms": round(statistics.median(samples), 1), "p95_ms": round(percentile(samples, 0.95), 1)}


def print_tables(r: dict[str, Any]) -> None:
    for key, title in (
        ("calibration", "the corrected question only"),
        ("calibration_with_paraphrases", "the corrected question and the paraphrases the base model wrote"),
    ):
        if key not in r:
            continue
        print(f"\nCalibration (MiniLM cosine of a question with the nearest entry's wording; {title})\n")
        print(
            "| threshold | unseen paraphrases: right entry | wrong entry | general: false hit | near miss: false hit |"
        )
        print("|---|---|---|---|---|")
        for row in r[key]:
            print(
                f"| {row['threshold']:.2f} | {row['hit_rate']:.0%} | {row['wrong_hit_rate']:.0%} "
                f"| {row['false_hit_rate_general']:.0%} | {row['false_hit_rate_near_miss']:.0%} |"
            )
    formats = r.get("no_retrain", {}).get("prompt_formats", {})
    if formats:
        print("\n| The nearest reviewed answer in the prompt, base model | paraphrases: recall | near misses: copied |")
        print("|---|---|---|")
        for name, figures in formats.items():
            print(f"| {name} | {figures['recall']:.0%} | {figures['near_miss_copied']:.0%} |")
    print("\n| What | Figure |\n|---|---|")
    for lookup in r["lookup"]:
        print(
            f"| lookup at {lookup['entries']:,} entries, {lookup.get('backend', 'sqlite')} (p50 / p95) "
            f"| {lookup['p50_ms']} / {lookup['p95_ms']} ms "
            f"(index first load {lookup['first_load_s']} s) |"
        )
    added = r["retrieval_added"]
    print(f"| latency the lookup adds to an answer (p50 / p95) | {added['p50_ms']} / {added['p95_ms']} ms |")
    paraphrased = r.get("no_retrain", {}).get("paraphrases")
    if paraphrased:
        print(
            f"| paraphrases written per entry (one request) | {paraphrased['stored_per_entry']} stored, "
            f"{paraphrased['per_entry_s']} s each; unseen wordings among them: {paraphrased['unseen_among_them']} |"
        )
    for mode, figures in r.get("no_retrain", {}).items():
        if mode in ("after_one_cycle", "prompt_formats", "paraphrases", "calibration_with_paraphrases"):
            continue
        print(
            f"| no retrain, {mode}: recall of unseen paraphrases | {figures['recall']:.0%} "
            f"({figures['direct_share']:.0%} given as reviewed; answer p50 {figures['answer_p50_ms']} ms) |"
        )
        print(f"| no retrain, {mode}: near misses answered with a fact | {figures['near_miss_with_a_fact']:.0%} |")
        print(
            f"| no retrain, {mode}: general questions answered exactly as before | {figures['general_unchanged']:.0%} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--vllm-port", type=int, default=8702)
    parser.add_argument("--no-vllm", action="store_true", help="only the calibration and the lookup latency")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also time lookups on this PostgreSQL server (a scratch database), with pgvector where installed "
        "and without, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument("--cycle", action="store_true", help="also one tuning cycle (about 30 more minutes)")
    args = parser.parse_args()
    results: dict[str, Any] = {"calibration": calibrate()}
    queries = [p for fact in FACTS for p in fact.paraphrases]
    results["lookup"] = [lookup_latency(n, queries) for n in (10_000, 100_000)]
    if args.postgres:
        results["lookup"] += [
            lookup_latency(n, queries, postgres=args.postgres, pgvector=pgvector)
            for pgvector in (True, False)
            for n in (10_000, 100_000)
        ]
    results["retrieval_added"] = retrieval_added_ms()
    if not args.no_vllm:
        results["no_retrain"] = asyncio.run(recall_without_retrain(args))
        results["calibration_with_paraphrases"] = results["no_retrain"].pop("calibration_with_paraphrases")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)


if __name__ == "__main__":
    main()
