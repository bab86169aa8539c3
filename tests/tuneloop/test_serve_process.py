"""`tuneloop serve` as a real process: it refuses to start, in one line, without a usable base model or vLLM port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port
from tests.tuneloop.logfmt import parse_logfmt
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME

START_TIMEOUT_S = 60


def serve_command() -> list[str]:
    """The `tuneloop` console script of this environment (pyproject's `tuneloop = tuneloop.cli:main`)."""
    script = Path(sys.executable).parent / "tuneloop"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-c", "from tuneloop.cli import main; main()", "serve"]


def serve_environment(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any tuneloop or Slack setting of the developer's, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNELOOP_", "SLACK_"))}
    env.update(
        {
            "TUNELOOP_DATA_DIR": str(data_dir),
            "TUNELOOP_SERVING__PORT": str(free_port()),
            "TUNELOOP_TRAINING__NIGHTLY_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(settings)
    return env


def run_serve(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    # cwd is the test's folder, so that no .env of the repository is read.
    return subprocess.run(
        serve_command(),
        env=serve_environment(tmp_path / "var", **settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


def assert_one_refusal_line(result: subprocess.CompletedProcess[str], *, says: str) -> dict[str, str]:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    fields = parse_logfmt(lines[0])
    assert fields["level"] == "error"
    assert says in fields["error"]
    return fields


def test_serve_refuses_to_start_without_the_base_model(tmp_path: Path) -> None:
    result = run_serve(tmp_path)
    fields = assert_one_refusal_line(result, says="does not exist")
    assert "serve.base_model_unusable" in fields
    assert "`tuneloop model pull`" in fields["error"]
    assert "`make model`" in fields["error"]
    assert str(tmp_path / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME) in fields["error"]
    # Nothing was started: no database, no vLLM log.
    assert not (tmp_path / "var" / "tuneloop.db").exists()
    assert not (tmp_path / "var" / "logs").exists()


def test_serve_refuses_a_broken_model_folder(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # no weights
    result = run_serve(tmp_path, TUNELOOP_SERVING__BASE_MODEL=str(broken))
    fields = assert_one_refusal_line(result, says="has no model weights")
    # A custom folder: pulling the default model would not help, so the line does not suggest it.
    assert "TUNELOOP_SERVING__BASE_MODEL" in fields["error"]
    assert "model pull" not in fields["error"]


def test_model_pull_refuses_a_missing_custom_folder(tmp_path: Path) -> None:
    command = [*serve_command()[:-1], "model", "pull", "--json"]
    env = serve_environment(tmp_path / "var", TUNELOOP_SERVING__BASE_MODEL=str(tmp_path / "nowhere"))
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert result.returncode != 0
    assert "does not exist" in result.stdout


def test_serve_refuses_a_vllm_port_held_by_another_process_and_names_it(
    tmp_path: Path, port_held: tuple[subprocess.Popen[str], int]
) -> None:
    """A vLLM left by a crashed service would answer the health checks: `make up` must not report healthy."""
    holder, port = port_held
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")  # enough for the folder check; nothing loads it
    result = run_serve(tmp_path, TUNELOOP_SERVING__BASE_MODEL=str(model), TUNELOOP_SERVING__VLLM_PORT=str(port))
    fields = assert_one_refusal_line(result, says=f"port {port} for vLLM is already held by pid {holder.pid}")
    assert "serve.vllm_port_taken" in fields
    assert "socket" in fields["error"]  # the holder's command line
    assert "TUNELOOP_SERVING__VLLM_PORT" in fields["hint"]
    assert not (tmp_path / "var" / "tuneloop.db").exists()  # nothing was started
