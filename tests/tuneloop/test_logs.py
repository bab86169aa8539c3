"""Every log line is one redacted logfmt record: the formatter and filter alone, then a real `tuneloop serve`."""

from __future__ import annotations

import logging
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.logging import AccessFormatter

from tests.conftest import REPO, free_port
from tests.tuneloop.logfmt import parse_logfmt
from tests.tuneloop.test_serve_process import serve_command, serve_environment
from training.redact import RedactingFilter
from tuneloop.logs import LogfmtFormatter, logfmt_value
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME

# Built from pieces, so that secret scanners on this repository do not take the fake for a real one.
SLACK_TOKEN = "xoxb-" + "1234-5678-" + "abcdefSECRET"
UVICORN_ACCESS_MESSAGE = '%s - "%s %s HTTP/%s" %d'
RUN_LOG = "/work/main/var/runs/run-0001/train.log"
TMP_ADAPTER = "/tmp/pytest-of-root/pytest-12/test_promote0/adapters/v0001"
# A path whose letters, taken as one token, score as a key: it used to become [SECRET].
RANDOM_TMP_PATH = "/tmp/tmpq8v2x_kz/var/models/SmolLM2-135M-Instruct"
START_TIMEOUT_S = 60.0
LOG_TIMEOUT_S = 30.0


def record(
    msg: str,
    args: Any = None,
    *,
    name: str = "serving.answers",
    level: int = logging.INFO,
    exc_info: Any = None,
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def logfmt(made: logging.LogRecord) -> dict[str, str]:
    RedactingFilter().filter(made)
    line = LogfmtFormatter().format(made)
    assert "\n" not in line
    return parse_logfmt(line)


# --- the formatter -----------------------------------------------------------------------------------
def test_an_event_line_has_time_level_logger_event_and_values() -> None:
    fields = logfmt(record("answer.start interaction=%s source=%s chars=%d", (3, "cli", 42)))
    assert fields == {
        "ts": fields["ts"],
        "level": "info",
        "logger": "serving.answers",
        "answer.start": "",
        "interaction": "3",
        "source": "cli",
        "chars": "42",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"])


@pytest.mark.parametrize(
    "value",
    [
        "the vLLM server is down",
        'she said "hi"',
        "a=b",
        "two\nlines\tand a tab",
        "",
        "back\\slash",
        "line\u2028separator and \x85 next-line",
        "naïve café ✓",
    ],
)
def test_a_value_that_could_break_the_line_is_quoted_and_comes_back_intact(value: str) -> None:
    line = LogfmtFormatter().format(record("engine.unavailable error=%s hint=%s", (value, "none")))
    assert len(line.splitlines()) == 1
    fields = parse_logfmt(line)
    assert fields["error"] == value
    assert fields["hint"] == "none"  # a value cannot forge or swallow the next key


def test_a_plain_word_stays_bare() -> None:
    assert logfmt_value("v0001") == "v0001"
    assert logfmt_value(RUN_LOG) == RUN_LOG
    assert logfmt_value("a b") == '"a b"'


def test_a_message_of_another_shape_goes_out_as_msg() -> None:
    fields = logfmt(record("Started server process [%d]", (123,), name="uvicorn.error"))
    assert fields["msg"] == "Started server process [123]"
    fields = logfmt(record("slack.off: a bot token is set but neither secret", None))
    assert fields["msg"] == "slack.off: a bot token is set but neither secret"


def test_values_in_a_message_without_arguments_are_left_as_written() -> None:
    fields = logfmt(record('cycle.skipped run=3 reason="no new feedback"'))
    assert fields["cycle.skipped"] == "" and fields["run"] == "3" and fields["reason"] == "no new feedback"


def test_mapping_arguments_are_rendered() -> None:
    fields = logfmt(record("feedback.vote interaction=%(id)s vote=%(vote)+d", ({"id": 7, "vote": -1},)))
    assert fields["interaction"] == "7" and fields["vote"] == "-1"


def test_a_traceback_goes_on_the_same_line_as_exc() -> None:
    try:
        raise RuntimeError(f"auth failed for {SLACK_TOKEN}")
    except RuntimeError:
        fields = logfmt(record("engine.unexpected_error", None, level=logging.ERROR, exc_info=sys.exc_info()))
    assert fields["level"] == "error"
    assert fields["exc"].startswith("Traceback (most recent call last):\n")
    assert fields["exc"].endswith("RuntimeError: auth failed for [SLACK_TOKEN]")
    assert SLACK_TOKEN not in str(fields)


def test_a_record_whose_arguments_do_not_fit_is_still_one_line() -> None:
    line = LogfmtFormatter().format(record("answer.start interaction=%s source=%s", (1,)))
    assert parse_logfmt(line)["msg"] == "answer.start interaction=%s source=%s"


def test_uvicorn_access_records_become_http_request_events() -> None:
    access = record(UVICORN_ACCESS_MESSAGE, ("127.0.0.1:5555", "GET", "/healthz", "1.1", 200), name="uvicorn.access")
    fields = logfmt(access)
    assert {k: fields[k] for k in ("http.request", "client", "method", "path", "status")} == {
        "http.request": "",
        "client": "127.0.0.1:5555",
        "method": "GET",
        "path": "/healthz",
        "status": "200",
    }


# --- the redacting filter ----------------------------------------------------------------------------
def test_the_filter_redacts_a_token_in_the_arguments_and_keeps_them_arguments() -> None:
    made = record("slack.failed code=%s error=%s", ("auth", f"invalid token {SLACK_TOKEN}"))
    RedactingFilter().filter(made)
    assert made.msg == "slack.failed code=%s error=%s"
    assert made.args == ("auth", "invalid token [SLACK_TOKEN]")
    assert made.getMessage() == "slack.failed code=auth error=invalid token [SLACK_TOKEN]"


def test_the_filter_redacts_the_template_and_mapping_arguments() -> None:
    made = record(f"token {SLACK_TOKEN} user=%(user)s", ({"user": "dana.whitfield@example.com"},))
    RedactingFilter().filter(made)
    assert made.getMessage() == "token [SLACK_TOKEN] user=[EMAIL]"
    assert made.args == {"user": "[EMAIL]"}


def test_a_secret_split_between_template_and_argument_is_still_redacted() -> None:
    made = record("login password=%s", ("hunter2",))
    RedactingFilter().filter(made)
    assert "hunter2" not in made.getMessage()
    assert parse_logfmt(LogfmtFormatter().format(made))["password"] == "[PASSWORD]"


def test_numbers_stay_numbers_for_their_conversions() -> None:
    made = record("engine.ready url=%s seconds=%.1f tokens=%d", (f"http://h/?t={SLACK_TOKEN}", 1.25, 1234))
    RedactingFilter().filter(made)
    assert made.args == ("http://h/?t=[SLACK_TOKEN]", 1.25, 1234)
    assert made.getMessage() == "engine.ready url=http://h/?t=[SLACK_TOKEN] seconds=1.2 tokens=1234"


def test_a_phone_number_passed_as_an_int_is_still_redacted() -> None:
    made = record("slack.user phone=%d", (4155552671,))
    RedactingFilter().filter(made)
    assert "4155552671" not in LogfmtFormatter().format(made)


@pytest.mark.parametrize("path", [RUN_LOG, TMP_ADAPTER, RANDOM_TMP_PATH])
def test_paths_are_left_alone_in_messages_and_errors(path: str) -> None:
    made = record("cycle.failed run=%s error=%s", (3, f"adapter at {path} is broken: {path}"))
    RedactingFilter().filter(made)
    assert made.getMessage() == f"cycle.failed run=3 error=adapter at {path} is broken: {path}"
    assert "[SECRET]" not in LogfmtFormatter().format(made)


def test_uvicorns_own_access_formatter_still_works_after_the_filter() -> None:
    access = record(
        UVICORN_ACCESS_MESSAGE,
        ("127.0.0.1:5555", "GET", f"/nope?token={SLACK_TOKEN}", "1.1", 404),
        name="uvicorn.access",
    )
    RedactingFilter().filter(access)
    assert isinstance(access.args, tuple) and len(access.args) == 5 and access.args[4] == 404
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(access)
    assert line == '127.0.0.1:5555 - "GET /nope?token=[SLACK_TOKEN] HTTP/1.1" 404 Not Found'


def test_a_record_is_redacted_once_when_both_logger_and_handler_filter_it() -> None:
    made = record("mail=%s", ("dana.whitfield@example.com",))
    assert RedactingFilter().filter(made) and RedactingFilter().filter(made)
    assert made.getMessage() == "mail=[EMAIL]"


# --- a real `tuneloop serve` --------------------------------------------------------------------------
class LineReader:
    """Reads a stream on a thread, so that the test can wait for a line with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, *, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {needle!r} in {timeout_s}s:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"the stream ended before {needle!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if needle in line:
                return line

    def rest(self, *, timeout_s: float) -> list[str]:
        """The lines up to the end of the stream (the process has exited)."""
        self._thread.join(timeout=timeout_s)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return self.lines


class ServedProcess:
    """`tuneloop serve` against an external vLLM URL with nothing listening: the API runs, /healthz says 503."""

    def __init__(self, tmp_path: Path) -> None:
        env = serve_environment(
            tmp_path / "var",
            TUNELOOP_SERVING__VLLM_URL=f"http://127.0.0.1:{free_port()}",
            TUNELOOP_SERVING__BASE_MODEL=str(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME),
            SLACK_BOT_TOKEN=SLACK_TOKEN,
        )
        self.url = f"http://127.0.0.1:{env['TUNELOOP_SERVING__PORT']}"
        self.stdout_path = tmp_path / "stdout.txt"
        with self.stdout_path.open("w") as out:
            self.process = subprocess.Popen(
                serve_command(), env=env, cwd=tmp_path, stdout=out, stderr=subprocess.PIPE, text=True, encoding="utf-8"
            )
        assert self.process.stderr is not None
        self.stderr = LineReader(self.process.stderr)

    def stop(self) -> list[str]:
        """Terminate it as Ctrl+C would; all its stderr lines."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        return self.stderr.rest(timeout_s=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedProcess]:
    running = ServedProcess(tmp_path)
    try:
        running.stderr.wait_for("Uvicorn running on", timeout_s=START_TIMEOUT_S)  # bound, not only started
        yield running
    finally:
        running.stop()


def test_a_served_process_writes_only_redacted_logfmt_with_access_lines(served: ServedProcess) -> None:
    last = f"/last-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=served.url, timeout=10) as http:
        assert http.get("/healthz").status_code == 503  # no vLLM behind it
        http.get("/nope", params={"token": SLACK_TOKEN})
        http.post("/api/ask", json={"question": f"is {SLACK_TOKEN} valid?", "user": "alice"})
        http.get(last)
    served.stderr.wait_for(f"path={last}", timeout_s=LOG_TIMEOUT_S)
    lines = served.stop()  # the shutdown lines are checked too
    output = "\n".join(lines) + served.stdout_path.read_text()

    assert "Logging error" not in output
    assert "Traceback" not in output
    assert SLACK_TOKEN not in output
    assert "abcdefSECRET" not in output
    records = [parse_logfmt(line) for line in lines if line.strip()]
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert all("http.request" in r for r in access)
    seen = {(r["method"], r["path"].split("?")[0]): r for r in access}
    assert seen[("GET", "/healthz")]["status"] == "503"
    assert seen[("GET", "/nope")]["path"] == "/nope?token=[SLACK_TOKEN]"
    assert seen[("GET", "/nope")]["status"].isdigit()  # 404, or 401 where the API wants a credential
    assert seen[("POST", "/api/ask")]["status"].isdigit()
    assert seen[("GET", last)]["client"].startswith("127.0.0.1:")
    # uvicorn's own lines come through the same handler, from start-up to shutdown.
    messages = [r.get("msg", "") for r in records if r["logger"] == "uvicorn.error"]
    assert any(m.startswith("Started server process") for m in messages)
    assert any(m.startswith("Finished server process") for m in messages)
    assert all(r["level"] in {"debug", "info", "warning", "error", "critical"} for r in records)
