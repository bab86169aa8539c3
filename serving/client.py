"""Async client for the vLLM OpenAI server: chat (whole or streamed), adapters, health."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from serving.errors import EngineRejected, EngineUnavailable

Message = dict[str, str]


class InferenceClient:
    def __init__(self, base_url: str, *, timeout_s: float = 120.0, transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=5.0), transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def healthy(self) -> bool:
        try:
            response = await self._http.get("/health", timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def list_models(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "/v1/models")
        return list(data.get("data", []))

    async def chat(self, *, model: str, messages: list[Message], max_tokens: int, temperature: float) -> str:
        payload = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        data = await self._request("POST", "/v1/chat/completions", json=payload)
        return str(data["choices"][0]["message"]["content"] or "")

    async def sample(
        self, *, model: str, messages: list[Message], n: int, max_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        """n independent completions of one prompt (used to write paraphrases)."""
        payload = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "n": n,
            "seed": seed,
        }
        data = await self._request("POST", "/v1/chat/completions", json=payload)
        return [str(choice["message"]["content"] or "") for choice in data["choices"]]

    async def chat_stream(
        self, *, model: str, messages: list[Message], max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        payload = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        try:
            async with self._http.stream("POST", "/v1/chat/completions", json=payload) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _rejected(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    for choice in chunk.get("choices", []):
                        delta = choice.get("delta", {}).get("content")
                        if delta:
                            yield delta
        except httpx.TransportError as error:
            raise _unavailable(error) from error

    async def metrics(self) -> httpx.Response:
        """vLLM's own Prometheus metrics (its GET /metrics), as it answered them."""
        response = await self.forward("GET", "/metrics")
        if response.status_code != 200:
            raise _rejected(response)
        return response

    async def forward(self, method: str, path: str, *, json_body: Any | None = None) -> httpx.Response:
        """Pass a request through unchanged (used by the OpenAI-compatible proxy)."""
        try:
            return await self._http.request(method, path, json=json_body)
        except httpx.TransportError as error:
            raise _unavailable(error) from error

    async def open_stream(self, path: str, *, json_body: Any) -> httpx.Response:
        request = self._http.build_request("POST", path, json=json_body)
        try:
            return await self._http.send(request, stream=True)
        except httpx.TransportError as error:
            raise _unavailable(error) from error

    async def load_adapter(self, *, name: str, path: str) -> None:
        await self._request("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})

    async def unload_adapter(self, *, name: str) -> None:
        await self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name})

    async def _request(self, method: str, path: str, *, json: Any | None = None) -> Any:
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.TransportError as error:
            raise _unavailable(error) from error
        if response.status_code >= 400:
            raise _rejected(response)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {"text": response.text}


def _unavailable(error: Exception) -> EngineUnavailable:
    return EngineUnavailable(
        f"the model server is not reachable ({type(error).__name__})",
        hint="Check that vLLM is running (`tuneloop status`); the question was recorded.",
    )


def _rejected(response: httpx.Response) -> EngineRejected | EngineUnavailable:
    detail = response.text[:500]
    try:
        body = response.json()
        detail = str(body.get("error", {}).get("message") or body.get("message") or body)[:500]
    except ValueError:
        pass
    if response.status_code in (502, 503, 504):
        return EngineUnavailable(f"the model server answered {response.status_code}: {detail}")
    return EngineRejected(f"the model server refused the request ({response.status_code}): {detail}")
