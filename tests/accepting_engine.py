"""vLLM's adapter routes as an httpx MockTransport handler, for tests about the store and audit, not the engine."""

from __future__ import annotations

import json

import httpx


class AcceptingEngine:
    """Every adapter load succeeds and /v1/models lists it from its folder; anything else answers 200."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/load_lora_adapter":
            body = json.loads(request.content)
            self.loaded[body["lora_name"]] = body["lora_path"]
        elif request.url.path == "/v1/unload_lora_adapter":
            self.loaded.pop(json.loads(request.content)["lora_name"], None)
        elif request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": n, "root": p} for n, p in self.loaded.items()]})
        return httpx.Response(200)
