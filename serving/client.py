"""Async client for one or more vLLM OpenAI servers: chat (whole or streamed), adapters, health.

With several servers (a company's replicas), each request goes to one of them in turn, and an adapter is
loaded on every one and confirmed by each before `ensure_adapter` returns, so that the registry moves
traffic to a version only once every server can serve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from serving.errors import EngineRejected, EngineUnavailable

Message = dict[str, str]


class InferenceClient:
    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("at least one vLLM server URL is needed")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.base_url = self.base_urls[0]
        self._members = [
            httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout_s, connect=5.0), transport=transport)
            for url in self.base_urls
        ]
        self._turns = itertools.cycle(range(len(self._members)))

    @property
    def _http(self) -> httpx.AsyncClient:
        """The server for the next request: each in turn."""
        return self._members[next(self._turns)]

    async def aclose(self) -> None:
        for member in self._members:
            await member.aclose()

    async def healthy(self) -> bool:
        """Every server answers its health check (a promotion needs them all)."""
        checks = await asyncio.gather(*(_healthy(member) for member in self._members))
        return all(checks)

    async def list_models(self) -> list[dict[str, Any]]:
        """The models of the first server (all of them serve the same, see `ensure_adapter`)."""
        return await _models(self._members[0])

    async def ensure_adapter(self, *, name: str, path: str) -> None:
        """Serve the adapter at `path` as `name` on every server, and have each confirm it before returning.

        A server that already serves `name` from the same folder (it outlived a restart of this service) keeps
        it; from another folder, it is loaded again. If any server refuses, the others unload it again and
        the error says which server refused: nothing may route to a name that one server does not know.
        """
        results = await asyncio.gather(
            *(_ensure_on(member, name=name, path=path) for member in self._members), return_exceptions=True
        )
        failures = [(url, r) for url, r in zip(self.base_urls, results, strict=True) if isinstance(r, BaseException)]
        if not failures:
            return
        for member, result in zip(self._members, results, strict=True):
            if not isinstance(result, BaseException):
                # Best effort: the load failed anyway, and an unused adapter does no harm.
                with contextlib.suppress(EngineRejected, EngineUnavailable):
                    await _request(member, "POST", "/v1/unload_lora_adapter", json={"lora_name": name})
        url, error = failures[0]
        if len(self._members) > 1 and isinstance(error, EngineRejected | EngineUnavailable):
            error.message = f"{error.message} (server {url})"
        raise error

    async def chat(self, *, model: str, messages: list[Message], max_tokens: int, temperature: float) -> str:
        payload = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        data = await self._request("POST", "/v1/chat/completions", json=payload)
        return str(data["choices"][0]["message"]["content"] or "")

    async def sample(
        self, *, model: str, messages: list[Message], n: int, max_tokens: int, temperature: float, seed: int | None
    ) -> list[str]:
        """n independent completions of one prompt (used to write paraphrases).

        `seed` None: vLLM's shared generator. A seeded request whose prompt is split across engine steps stops
        vLLM's CPU engine ("CPU Generator does not use offset"): our engines never split one (serving/engine.py),
        an engine started elsewhere must run with `--no-enable-chunked-prefill` for seeded requests."""
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
        """vLLM's own Prometheus metrics (its GET /metrics), as the first server answered them."""
        try:
            response = await self._members[0].request("GET", "/metrics")
        except httpx.TransportError as error:
            raise _unavailable(error) from error
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
        """Load on every server, with no check of what was there (see `ensure_adapter` for that)."""
        for member in self._members:
            await _request(member, "POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})

    async def unload_adapter(self, *, name: str) -> None:
        for member in self._members:
            await _request(member, "POST", "/v1/unload_lora_adapter", json={"lora_name": name})

    async def reload_weights(self, *, path: str, timeout_s: float = 600.0) -> None:
        """Replace the weights of every server in place with the model folder at `path` (vLLM's dev-mode RPC).

        The prefix cache holds keys and values computed with the old weights: it is emptied right after.
        """
        body = {"method": "reload_weights", "kwargs": {"weights_path": path}, "timeout": timeout_s}
        for member in self._members:
            await _request(member, "POST", "/collective_rpc", json=body)
            await _request(member, "POST", "/reset_prefix_cache")

    async def _request(self, method: str, path: str, *, json: Any | None = None) -> Any:
        return await _request(self._http, method, path, json=json)


async def _request(http: httpx.AsyncClient, method: str, path: str, *, json: Any | None = None) -> Any:
    try:
        response = await http.request(method, path, json=json)
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


async def _healthy(http: httpx.AsyncClient) -> bool:
    try:
        response = await http.get("/health", timeout=5.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def _models(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    data = await _request(http, "GET", "/v1/models")
    return list(data.get("data", []))


async def _ensure_on(http: httpx.AsyncClient, *, name: str, path: str) -> None:
    try:
        await _request(http, "POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
    except EngineRejected as error:
        if "already been loaded" not in error.message:
            raise
        served = {model["id"]: model.get("root") for model in await _models(http)}
        if served.get(name) != path:
            await _request(http, "POST", "/v1/unload_lora_adapter", json={"lora_name": name})
            await _request(http, "POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
    # The server's own word that it now serves `name` from `path`, before any request is sent to it.
    served = {model["id"]: model.get("root") for model in await _models(http)}
    if served.get(name) != path:
        raise EngineRejected(f"the model server did not list adapter {name} after loading it")


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
