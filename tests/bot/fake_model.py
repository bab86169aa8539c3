"""A stand-in for vLLM's OpenAI server that writes a scripted answer at a set pace, for tests about timing.

Real HTTP in a thread: GET /health, GET /v1/models, and POST /v1/chat/completions with `"stream": true`, answered
as server-sent events in OpenAI's chunk shape, one word every `gap_s`, then `data: [DONE]`. It records when each
stream began and ended (time.monotonic(), the clock the Slack stand-in stamps its calls with).

    model = FakeModel(words=["Paris ", "is ", "the ", "capital."], gap_s=0.2).start()
    ... settings.serving.vllm_url = model.url ...
    model.finished_at[-1]  # when the last answer's final word went out
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeModel:
    def __init__(self, *, words: list[str], gap_s: float, served_model_name: str = "tuneloop-base") -> None:
        self.words = words
        self.gap_s = gap_s
        self.served_model_name = served_model_name
        self.started_at: list[float] = []
        self.finished_at: list[float] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/health":
                    self._json({})
                elif self.path == "/v1/models":
                    self._json({"object": "list", "data": [{"id": model.served_model_name, "object": "model"}]})
                else:
                    self.send_error(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/v1/chat/completions" or not request.get("stream"):
                    self.send_error(404)
                    return
                model._stream(self, str(request.get("model")))

            def _json(self, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def text(self) -> str:
        return "".join(self.words)

    def start(self) -> FakeModel:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _stream(self, request: BaseHTTPRequestHandler, model: str) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "text/event-stream")
        request.end_headers()
        self.started_at.append(time.monotonic())
        for index, word in enumerate(self.words):
            if index:
                time.sleep(self.gap_s)  # the model's pace
            chunk = {"object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {}}]}
            chunk["choices"][0]["delta"] = {"content": word}
            request.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            request.wfile.flush()
        request.wfile.write(b"data: [DONE]\n\n")
        request.wfile.flush()
        self.finished_at.append(time.monotonic())
