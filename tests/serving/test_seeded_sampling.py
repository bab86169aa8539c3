"""Seeded paraphrase requests beside busy traffic, on the real vLLM server as tuneloop starts it.

The memory of reviewed answers writes its paraphrases with a seed, so that the nightly training data is the same
from run to run. On vLLM's CPU build a seeded request whose prompt is split across engine steps stops the engine
("CPU Generator does not use offset"); tuneloop's engines never split a prompt (serving/engine.py). Here long
prompts fill the engine's steps while seeded requests arrive: every request must succeed, the engine must stay
up, and a seeded request must give the same samples again.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serving.client import InferenceClient
from training.augment import paraphrase_prompt

pytestmark = pytest.mark.slow

QUESTION = "Which date does payroll land on every month?"
# ~1,500 tokens: two of these and a paraphrase prompt do not fit one step's budget whole.
LONG_PROMPT = "Summarise the following notes in one sentence. " + "The quarterly review covers sales. " * 250


async def _sample(client: InferenceClient, seed: int) -> list[str]:
    return await client.sample(
        model="tuneloop-base", messages=paraphrase_prompt(QUESTION), n=8, max_tokens=32, temperature=0.9, seed=seed
    )


async def _long_answer(http: httpx.AsyncClient) -> int:
    payload = {"model": "tuneloop-base", "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 8}
    response = await http.post("/v1/chat/completions", json=payload, timeout=300)
    return response.status_code


async def test_seeded_samples_beside_long_prompts_neither_fail_nor_stop_the_engine(vllm_url: str) -> None:
    client = InferenceClient(vllm_url, timeout_s=300)
    async with httpx.AsyncClient(base_url=vllm_url) as http:
        try:
            alone = await _sample(client, seed=1234)
            busy = await asyncio.gather(
                *(_long_answer(http) for _ in range(6)),
                *(_sample(client, seed=1234) for _ in range(3)),
                return_exceptions=True,
            )
            failures = [result for result in busy if isinstance(result, BaseException)]
            assert failures == []
            assert busy[:6] == [200] * 6
            health = await http.get("/health", timeout=10)
            assert health.status_code == 200
            again = await _sample(client, seed=1234)
        finally:
            await client.aclose()
    assert len(alone) == 8
    # The same seed gives the same samples when the engine is idle, run after run.
    assert again == alone
