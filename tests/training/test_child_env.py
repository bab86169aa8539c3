"""Child processes (the trainer, vLLM) get the environment they need and none of the service's secrets.

Real children, started through the real call sites; only the program they run is swapped for one that
reports its environment, so that neither torch nor vLLM has to start.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from serving.engine import EngineConfig, VLLMProcess
from training.child_env import child_environment
from training.process import train_in_subprocess
from training.trainer import TrainSpec

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-" + "1234-5678-abcdefSECRET",
    "SLACK_SIGNING_SECRET": "signing-secret-value",
    "TUNELOOP_SLACK__BOT_TOKEN": "xoxb-" + "9999-8888-nestedSECRET",
    "TUNELOOP_STORE__URL": "postgresql+psycopg://tuneloop:dbSECRET@db:5432/tuneloop",
    "DATABASE_URL": "postgresql://u:dbSECRET2@db/x",
    "PGPASSWORD": "pgSECRET",
    "PGUSER": "tuneloop",
    "TUNELOOP_TOKEN": "tl_" + "apiSECRET",
    "TUNELOOP_ACCESS__ADMINS": '["U_ADMIN"]',
    "TUNELOOP_DATA_DIR": "/srv/tuneloop",
}
NEEDED = {
    "OMP_NUM_THREADS": "2",
    "HF_HOME": "/srv/hf",
    "VLLM_CPU_OMP_THREADS_BIND": "all",
    "CUDA_VISIBLE_DEVICES": "0",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor",
}
PRINT_ENVIRONMENT = "import json, os; print(json.dumps({'event': 'done', 'metrics': dict(os.environ)}))"


@pytest.fixture
def secret_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SECRETS, **NEEDED}.items():
        monkeypatch.setenv(name, value)


def assert_only_what_children_need(env: dict[str, str]) -> None:
    leaked = sorted(name for name in env if name in SECRETS or name.startswith(("TUNELOOP_", "SLACK_", "PG")))
    assert not leaked
    assert not [value for value in env.values() if "SECRET" in value]
    for name, value in NEEDED.items():
        assert env.get(name) == value, name
    assert env["PATH"]


def test_the_allowlist_keeps_runtime_settings_and_drops_the_rest() -> None:
    source = {**SECRETS, **NEEDED, "PATH": "/usr/bin", "AWS_SECRET_ACCESS_KEY": "x", "GITHUB_TOKEN": "y"}
    env = child_environment({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}, source=source)
    assert env == {**NEEDED, "PATH": "/usr/bin", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


@pytest.mark.usefixtures("secret_environment")
async def test_the_trainer_child_gets_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # training.process calls asyncio.create_subprocess_exec through the module, so patching it there reaches it.
    real_exec = asyncio.create_subprocess_exec

    async def same_call_other_program(*_command: str, **options: Any) -> asyncio.subprocess.Process:
        # train_in_subprocess's own options (env, pipes) are kept; only `python -m training.worker` is swapped.
        return await real_exec(sys.executable, "-c", PRINT_ENVIRONMENT, **options)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", same_call_other_program)
    spec = TrainSpec(
        base_model=str(tmp_path / "model"), output_dir=str(tmp_path / "out"), sft_path=str(tmp_path / "sft.jsonl")
    )
    env = await train_in_subprocess(
        spec, spec_path=tmp_path / "spec.json", log_path=tmp_path / "train.log", on_event=lambda _event: None
    )
    assert_only_what_children_need(env)


@pytest.mark.usefixtures("secret_environment")
def test_the_vllm_child_gets_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = EngineConfig(
        model_dir=tmp_path / "model",
        served_model_name="tuneloop-base",
        host="127.0.0.1",
        port=1,
        dtype="float32",
        max_model_len=256,
        max_lora_rank=8,
        max_loras=1,
        cpu_kv_cache_gib=3,
        log_path=tmp_path / "vllm.log",
    )
    # VLLMProcess.start is the real one (its env, its log file); only the program is not vLLM.
    monkeypatch.setattr(EngineConfig, "command", lambda _self: [sys.executable, "-c", PRINT_ENVIRONMENT])
    vllm = VLLMProcess(config)
    vllm.start()
    assert vllm._process is not None
    assert vllm._process.wait(timeout=60) == 0
    env = json.loads(config.log_path.read_text())["metrics"]
    assert_only_what_children_need(env)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["HF_HUB_OFFLINE"] == "1"
