"""Twenty nights of new corrections: what each strategy costs per night and what it remembers.

`python -m bench.nights` invents facts (a door code, a contact, a channel: each with a key term that proves it was
given), teaches `--per-night` new ones each night for `--nights` nights, and trains one adapter per night and
strategy with the real trainer (TRL, PEFT, the real SmolLM2-135M):
- from_base: a fresh LoRA on every fact taught so far (the whole history);
- incremental: last night's adapter trained further on tonight's facts plus a replay sample of older ones
  (`training.replay_examples`, `training.replay_ratio`, as the cycle draws it).
After each night, every fact taught so far is asked in a wording no training row holds, greedy, with that
night's adapter; recall is the share of answers holding the fact's key term. Both strategies train the same
night one after the other, so a busy machine slows both alike: compare within a night.
Prints a Markdown table and writes bench/nights.json. Not a test: it asserts nothing. No vLLM: the
strategies are compared on training cost and recall alone (the cycle's other stages cost both the same).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.datasets import write_jsonl
from training.prompts import prompt_messages
from training.trainer import TrainSpec, train
from tuneloop.base_model import pull_default_model
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME, Settings

REPO = Path(__file__).resolve().parent.parent
PLACES = ["bike room", "server room", "roof terrace", "archive", "mail room", "gym", "lab", "print shop",
          "library", "music room", "garage", "wine cellar", "workshop", "studio", "pantry", "attic",
          "boiler room", "loading dock", "quiet room", "game room"]  # fmt: skip
SYSTEMS = ["the payroll system", "the VPN", "the expense tool", "the wiki", "the badge readers", "the CRM",
           "the build farm", "the phone lines", "the data warehouse", "the HR portal", "the ticket queue",
           "the travel portal", "the status page", "the office Wi-Fi", "the laptops", "the printers",
           "the calendar", "the password manager", "the backups", "the design files"]  # fmt: skip
TOPICS = ["parking", "lunch orders", "lost keys", "desk moves", "visitor badges", "coffee machines",
          "bike repairs", "plant care", "room bookings", "team outings", "book club", "car sharing",
          "recycling", "first aid", "fire drills", "lockers", "mail pickup", "shuttle buses", "language classes",
          "yoga sessions"]  # fmt: skip
NAMES = ["Okafor", "Lindqvist", "Takahashi", "Moreau", "Castellano", "Novak", "Haddad", "Brennan", "Szabo",
         "Ferreira", "Kowalczyk", "Achterberg", "Mbeki", "Vasquez", "Rautio", "Delacroix", "Nakamura", "Oyelaran",
         "Petrov", "Quintero"]  # fmt: skip


@dataclass(frozen=True)
class Fact:
    questions: tuple[str, ...]  # trained wordings (the corrected one and two rewordings)
    unseen: str  # asked after training, in no training row
    answer: str
    key: str


def invent_facts(count: int, *, seed: int) -> list[Fact]:
    rng = random.Random(seed)
    facts: list[Fact] = []
    kinds = ["code", "contact", "channel"]
    for index in range(count):
        kind, slot = kinds[index % 3], index // 3
        if kind == "code":
            place, code = PLACES[slot % len(PLACES)], str(rng.randint(1000, 9999))
            facts.append(Fact(
                (f"What is the door code for the {place}?", f"What's the code of the {place} door?",
                 f"How do I unlock the {place}?"),
                f"Which code opens the {place}?", f"The {place} door code is {code}.", code,
            ))  # fmt: skip
        elif kind == "contact":
            system, name = SYSTEMS[slot % len(SYSTEMS)], NAMES[(slot * 7 + 3) % len(NAMES)]
            facts.append(Fact(
                (f"Who is the contact for {system}?", f"Who looks after {system}?",
                 f"Who do I talk to about {system}?"),
                f"Whom should I ask about problems with {system}?", f"{name} is the contact for {system}.", name,
            ))  # fmt: skip
        else:
            topic = TOPICS[slot % len(TOPICS)]
            channel = "-".join(topic.split()) + f"-{rng.randint(10, 99)}"
            facts.append(Fact(
                (f"Which Slack channel is for {topic}?", f"Where do people talk about {topic} in Slack?",
                 f"What channel should I use for {topic}?"),
                f"Where in Slack do I go for {topic}?", f"Use the #{channel} channel for {topic}.", channel,
            ))  # fmt: skip
    return facts


def rows(facts: list[Fact], system_prompt: str) -> list[dict[str, Any]]:
    return [
        {
            "prompt": prompt_messages(system_prompt=system_prompt, context=[], question=question),
            "completion": [{"role": "assistant", "content": fact.answer}],
        }
        for fact in facts
        for question in fact.questions
    ]


class Asker:
    """Greedy answers of one adapter, batched, with transformers (the same weights vLLM would serve)."""

    def __init__(self, base_model: Path, system_prompt: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._base_model, self._system_prompt = base_model, system_prompt
        self._tokenizer = AutoTokenizer.from_pretrained(base_model, padding_side="left")
        self._model = AutoModelForCausalLM.from_pretrained(base_model).eval()

    def recall(self, adapter: Path, facts: list[Fact]) -> list[bool]:
        import torch
        from peft import PeftModel

        model = PeftModel.from_pretrained(self._model, str(adapter)).eval()
        hits: list[bool] = []
        for start in range(0, len(facts), 16):
            batch = facts[start : start + 16]
            texts = [
                self._tokenizer.apply_chat_template(
                    prompt_messages(system_prompt=self._system_prompt, context=[], question=f.unseen),
                    add_generation_prompt=True,
                    tokenize=False,
                )
                for f in batch
            ]
            inputs = self._tokenizer(texts, return_tensors="pt", padding=True)
            with torch.no_grad():
                output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
            answers = self._tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            hits += [f.key.lower() in a.lower() for f, a in zip(batch, answers, strict=True)]
        self._model = model.unload()  # the bare base again, for the next adapter
        return hits


def night_spec(settings: Settings, *, base: Path, out: Path, sft: Path, init: Path | None) -> TrainSpec:
    from tuneloop.train_spec import train_spec

    spec = train_spec(settings, sft_path=sft, dpo_path=None, output_dir=out, init_adapter=str(init) if init else None)
    spec.base_model = str(base)
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--per-night", type=int, default=10, help="new corrections each night")
    parser.add_argument(
        "--from-base-nights", type=int, default=None, help="train from_base on the first N nights only (it grows)"
    )
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    settings = Settings()
    base, _ = pull_default_model(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME)
    system_prompt = settings.serving.system_prompt
    facts = invent_facts(args.nights * args.per_night, seed=args.seed)
    asker = Asker(base, system_prompt)
    work = Path(tempfile.mkdtemp(prefix="tuneloop-nights-"))
    rng = random.Random(args.seed)
    results: list[dict[str, Any]] = []
    previous: Path | None = None
    print("| night | facts | strategy | rows | epochs | training s | recall, all | recall, older | lowest older |")
    print("|---|---|---|---|---|---|---|---|---|")
    for night in range(1, args.nights + 1):
        taught = facts[: night * args.per_night]
        new, older = taught[-args.per_night :], taught[: -args.per_night]
        plans: list[tuple[str, list[Fact], Path | None]] = []
        if args.from_base_nights is None or night <= args.from_base_nights:
            plans.append(("from_base", taught, None))
        if previous is None:
            plans.append(("incremental", taught, None))  # the first night: nothing to continue
        else:
            t = settings.training
            replay = min(len(older), max(t.replay_examples, math.ceil(t.replay_ratio * len(new))))
            plans.append(("incremental", new + rng.sample(older, replay), previous))
        for strategy, trained, init in plans:
            folder = work / f"night-{night:02d}-{strategy}"
            sft = write_jsonl(folder / "sft.jsonl", rows(trained, system_prompt))
            spec = night_spec(settings, base=base, out=folder / "adapter", sft=sft, init=init)
            started = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; the table stays clean
                metrics = train(spec, report=lambda event: None)
            seconds = round(time.perf_counter() - started, 1)
            hits = asker.recall(folder / "adapter", taught)
            older_hits = hits[: len(older)]
            row = {
                "night": night,
                "facts": len(taught),
                "strategy": strategy,
                "rows": metrics["sft"]["rows"],
                "epochs": metrics["sft"]["epochs"],
                "training_s": seconds,
                "recall_all": round(sum(hits) / len(hits), 3),
                "recall_older": round(sum(older_hits) / len(older_hits), 3) if older_hits else None,
                # Per night of teaching: the worst-kept batch of older facts.
                "lowest_older_night": min(
                    (
                        round(sum(older_hits[i : i + args.per_night]) / args.per_night, 2)
                        for i in range(0, len(older_hits), args.per_night)
                    ),
                    default=None,
                ),
            }
            results.append(row)
            if strategy == "incremental":
                previous = folder / "adapter"
            print(
                f"| {night} | {row['facts']} | {strategy} | {row['rows']} | {row['epochs']} | {seconds} "
                f"| {row['recall_all']} | {row['recall_older']} | {row['lowest_older_night']} |",
                flush=True,
            )
            (REPO / "bench" / "nights.json").write_text(json.dumps({"args": vars(args), "nights": results}, indent=2))


if __name__ == "__main__":
    main()
