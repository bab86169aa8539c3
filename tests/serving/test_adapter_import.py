"""Bringing an adapter trained elsewhere: `POST /admin/adapters/import` and `tuneloop adapters import`.

Real PEFT LoRA folders of the real base model (random weights, no training), imported through the real app over
HTTP (SQLite and PostgreSQL for the import itself). No vLLM for most: importing only checks, copies and registers
a folder; vLLM loads it when it is promoted, which the last test (slow) does on the real vLLM.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import ApiCaller, RunningService, free_port, make_settings
from tests.serving.conftest import ADMIN, EMPLOYEE, REVIEWER
from tuneloop.cli import app

TRAINED_ELSEWHERE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what a folder trained from the Hub names as its base


def make_lora(base_model_dir: Path, folder: Path, *, rank: int, targets: list[str]) -> Path:
    """A real PEFT LoRA folder of the base model, as save_pretrained writes it (random weights: no training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(rank)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loras(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        "good": make_lora(base_model_dir, root / "good", rank=8, targets=["q_proj", "v_proj"]),
        "rank32": make_lora(base_model_dir, root / "rank32", rank=32, targets=["q_proj"]),
    }


def copy_of(loras: dict[str, Path], tmp_path: Path, name: str = "good") -> Path:
    """A folder of our own to change, with the base model named as a folder trained from the Hub names it."""
    folder = Path(shutil.copytree(loras[name], tmp_path / f"incoming-{name}"))
    edit_config(folder, base_model_name_or_path=TRAINED_ELSEWHERE)
    return folder


def edit_config(folder: Path, **changes: Any) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(tmp_path: Path, base_model_dir: Path, store_url: str | None) -> RunningService:
    settings = make_settings(
        tmp_path,
        base_model_dir=base_model_dir,
        vllm_url=f"http://127.0.0.1:{free_port()}",  # nothing listens: importing needs no vLLM
        **({"store": {"url": store_url}} if store_url else {}),
    )
    return RunningService(settings).start(wait_ready=False)


@pytest.fixture
def host(tmp_path: Path, base_model_dir: Path, store_url: str | None) -> Iterator[RunningService]:
    running = start(tmp_path, base_model_dir, store_url)
    yield running
    running.stop()


@pytest.fixture
def sqlite_host(tmp_path: Path, base_model_dir: Path) -> Iterator[RunningService]:
    running = start(tmp_path, base_model_dir, None)
    yield running
    running.stop()


@pytest.fixture
def admin(host: RunningService) -> Iterator[ApiCaller]:
    caller = ApiCaller(host, ADMIN)
    yield caller
    caller.close()


def registered(caller: ApiCaller) -> list[str]:
    """The versions in the store besides the base model (whose row exists once vLLM was up, or after an import)."""
    return [v["version"] for v in caller.get("/admin/adapters").json()["versions"] if v["version"] != "base"]


def imports(caller: ApiCaller, **query: str | None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = caller.get("/admin/audit", params={"action": "adapter.import", **query}).json()[
        "events"
    ]
    return events


def test_an_admin_imports_a_folder_as_a_ready_version_that_a_later_change_of_the_source_does_not_touch(
    host: RunningService, admin: ApiCaller, loras: dict[str, Path], tmp_path: Path
) -> None:
    source = copy_of(loras, tmp_path)
    weights_sha256 = sha256(source / "adapter_model.safetensors")

    response = admin.post("/admin/adapters/import", json={"path": str(source)})

    assert response.status_code == 201, response.text
    imported = response.json()
    assert (imported["version"], imported["status"], imported["active"], imported["run_id"]) == (
        "v0001",
        "ready",
        False,
        None,
    )
    record = imported["metrics"]["import"]
    assert record["sha256"] == weights_sha256
    assert (record["source"], record["r"], record["target_modules"]) == (str(source), 8, ["q_proj", "v_proj"])
    assert record["imported_by"] == ADMIN and record["base_model_name_or_path"] == TRAINED_ELSEWHERE
    listed = admin.get("/admin/adapters").json()
    assert listed["active"] == "base"
    assert [(v["version"], v["status"], v["active"]) for v in listed["versions"]] == [
        ("base", "active", True),
        ("v0001", "ready", False),
    ]
    copied = host.settings.adapters_dir / "v0001"
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in source.iterdir())
    assert [p.name for p in host.settings.adapters_dir.iterdir()] == ["v0001"]  # no staging folder left
    (event,) = imports(admin)
    assert (event["actor"], event["source"], event["target"], event["outcome"]) == (ADMIN, "api", "v0001", "ok")
    assert event["detail"] == {"source": str(source), "sha256": weights_sha256}

    # The source changes (retrained in place, say): the registered copy does not.
    (source / "adapter_model.safetensors").write_bytes(b"retrained")
    assert sha256(copied / "adapter_model.safetensors") == weights_sha256

    named = admin.post(
        "/admin/adapters/import", json={"path": str(copy_of(loras, tmp_path / "2")), "version": "acme-1"}
    )
    assert (named.status_code, named.json()["version"]) == (201, "acme-1")
    after = admin.post("/admin/adapters/import", json={"path": str(copy_of(loras, tmp_path / "3"))})
    assert after.json()["version"] == "v0002"
    assert {v["version"] for v in admin.get("/admin/adapters").json()["versions"]} == {
        "base",
        "v0001",
        "acme-1",
        "v0002",
    }


def test_a_name_that_is_taken_or_the_base_models_is_a_conflict(
    sqlite_host: RunningService, loras: dict[str, Path], tmp_path: Path
) -> None:
    admin = ApiCaller(sqlite_host, ADMIN)
    try:
        source = copy_of(loras, tmp_path)
        assert admin.post("/admin/adapters/import", json={"path": str(source), "version": "v0007"}).status_code == 201
        for taken in ("v0007", "base"):
            response = admin.post("/admin/adapters/import", json={"path": str(source), "version": taken})
            assert response.status_code == 409, response.text
            assert response.json()["error"]["hint"]
        # A folder left by an interrupted cycle is never overwritten: the next name is taken instead.
        (sqlite_host.settings.adapters_dir / "v0008").mkdir()
        assert admin.post("/admin/adapters/import", json={"path": str(source)}).json()["version"] == "v0009"
        refused = admin.post("/admin/adapters/import", json={"path": str(source), "version": "v0008"})
        assert refused.status_code == 409 and "v0008" in refused.json()["error"]["message"]
        assert [e["target"] for e in imports(admin, outcome="ok")] == ["v0009", "v0007"]
    finally:
        admin.close()


def _not_a_folder(folder: Path) -> str:
    return str(folder / "adapter_config.json")


def _relative(folder: Path) -> str:
    return folder.name


def _missing(folder: Path) -> str:
    return str(folder.parent / "nowhere")


def _without_config(folder: Path) -> str:
    (folder / "adapter_config.json").unlink()
    return str(folder)


def _config_not_json(folder: Path) -> str:
    (folder / "adapter_config.json").write_text("{not json")
    return str(folder)


def _not_lora(folder: Path) -> str:
    edit_config(folder, peft_type="IA3")
    return str(folder)


def _other_base_model(folder: Path) -> str:
    edit_config(folder, base_model_name_or_path="HuggingFaceTB/SmolLM2-360M-Instruct")
    return str(folder)


def _unknown_target_module(folder: Path) -> str:
    edit_config(folder, target_modules=["q_proj", "wq"])
    return str(folder)


def _rank_not_the_weights(folder: Path) -> str:
    edit_config(folder, r=4)
    return str(folder)


def _modules_to_save(folder: Path) -> str:
    edit_config(folder, modules_to_save=["lm_head"])
    return str(folder)


def _corrupt_weights(folder: Path) -> str:
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    return str(folder)


def _truncated_weights(folder: Path) -> str:
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return str(folder)


def _pickled_weights(folder: Path) -> str:
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    return str(folder)


def _code_inside(folder: Path) -> str:
    (folder / "modeling_custom.py").write_text("import os\n")
    return str(folder)


def _link_out_of_the_folder(folder: Path) -> str:
    outside = folder.parent / "secret.txt"
    outside.write_text("not for the adapters folder")
    (folder / "notes.txt").symlink_to(outside)
    return str(folder)


REFUSALS: list[tuple[str, Callable[[Path], str], str]] = [
    ("a file, not a folder", _not_a_folder, "is not a folder"),
    ("a relative path", _relative, "is not an absolute path"),
    ("nothing there", _missing, "does not exist"),
    ("no adapter_config.json", _without_config, "has no adapter_config.json"),
    ("a config that is not JSON", _config_not_json, "is not valid JSON"),
    ("not LoRA", _not_lora, "peft_type is 'IA3'"),
    ("another base model", _other_base_model, "trained on 'HuggingFaceTB/SmolLM2-360M-Instruct'"),
    ("an unknown target module", _unknown_target_module, "target module 'wq' is not a module"),
    ("weights not of the config's rank", _rank_not_the_weights, "lora_A is [8, 576]"),
    ("modules_to_save", _modules_to_save, "modules_to_save"),
    ("corrupt safetensors", _corrupt_weights, "is not a readable safetensors file"),
    ("truncated safetensors", _truncated_weights, "is not a readable safetensors file"),
    ("pickled weights", _pickled_weights, "a pickle"),
    ("a .py file inside", _code_inside, "modeling_custom.py is code"),
    ("a link out of the folder", _link_out_of_the_folder, "outside the adapter folder"),
]


@pytest.mark.parametrize(("_case", "spoil", "reason"), REFUSALS, ids=[case for case, _, _ in REFUSALS])
def test_a_folder_the_service_cannot_serve_is_refused_with_the_reason_and_audited(
    sqlite_host: RunningService,
    loras: dict[str, Path],
    tmp_path: Path,
    _case: str,
    spoil: Callable[[Path], str],
    reason: str,
) -> None:
    path = spoil(copy_of(loras, tmp_path))
    admin = ApiCaller(sqlite_host, ADMIN)
    try:
        response = admin.post("/admin/adapters/import", json={"path": path})

        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_adapter"
        assert reason in error["message"]
        assert error["hint"]
        assert registered(admin) == []
        adapters_dir = sqlite_host.settings.adapters_dir
        assert not adapters_dir.exists() or list(adapters_dir.iterdir()) == []  # the staged copy is gone
        (event,) = imports(admin)
        assert (event["actor"], event["outcome"], event["target"]) == (ADMIN, "failed", None)
        assert event["detail"] == {"source": path, "error": error["message"]}
    finally:
        admin.close()


def test_a_rank_over_the_servings_max_lora_rank_is_refused(
    sqlite_host: RunningService, loras: dict[str, Path], tmp_path: Path
) -> None:
    admin = ApiCaller(sqlite_host, ADMIN)
    try:
        response = admin.post("/admin/adapters/import", json={"path": str(copy_of(loras, tmp_path, "rank32"))})
        assert response.status_code == 422
        assert "rank is 32, over this service's max_lora_rank 16" in response.json()["error"]["message"]
        assert "TUNELOOP_SERVING__MAX_LORA_RANK" in response.json()["error"]["hint"]
    finally:
        admin.close()


def test_employees_and_reviewers_may_not_import(
    sqlite_host: RunningService, loras: dict[str, Path], tmp_path: Path
) -> None:
    source = copy_of(loras, tmp_path)
    callers = [ApiCaller(sqlite_host, user) for user in (EMPLOYEE, REVIEWER, ADMIN)]
    try:
        for caller in callers[:2]:
            response = caller.post("/admin/adapters/import", json={"path": str(source)})
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "forbidden"
        assert registered(callers[2]) == []
        assert not sqlite_host.settings.adapters_dir.exists()
        refused = imports(callers[2], outcome="refused")
        assert sorted(e["actor"] for e in refused) == [EMPLOYEE, REVIEWER]
    finally:
        for caller in callers:
            caller.close()


def test_the_cli_sends_the_absolute_path_and_prints_the_new_version(
    sqlite_host: RunningService,
    loras: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNELOOP_URL", sqlite_host.url)
    admin = ApiCaller(sqlite_host, ADMIN)
    source = copy_of(loras, tmp_path)
    monkeypatch.chdir(source.parent)  # a path relative to where the command runs
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["adapters", "import", source.name, "--name", "acme-1", "--token", admin.token])
        assert result.exit_code == 0, result.output
        printed = " ".join(result.output.split())
        assert f"imported {source} as acme-1 (ready" in printed and "tuneloop promote acme-1" in printed

        result = runner.invoke(app, ["adapters", "import", source.name, "--token", admin.token, "--json"])
        assert result.exit_code == 0, result.output
        imported = json.loads(result.stdout)
        assert (imported["version"], imported["metrics"]["import"]["source"]) == ("v0001", str(source))

        listed = runner.invoke(app, ["adapters", "--token", admin.token, "--json"])
        assert [v["version"] for v in json.loads(listed.stdout)["versions"]] == ["base", "acme-1", "v0001"]
        table = runner.invoke(app, ["adapters", "--token", admin.token])
        assert table.exit_code == 0 and "imported" in table.stdout

        (source / "train.py").write_text("print('hi')\n")
        result = runner.invoke(app, ["adapters", "import", str(source), "--token", admin.token, "--json"])
        assert result.exit_code == 1
        assert json.loads(result.stdout)["error"]["code"] == "invalid_adapter"
        result = runner.invoke(app, ["adapters", "import", str(source), "--name", "no spaces", "--token", admin.token])
        assert result.exit_code == 1 and "--name" in result.output
    finally:
        admin.close()


@pytest.mark.slow
def test_an_imported_adapter_is_promoted_on_the_real_vllm_and_answers_under_its_name(
    service: RunningService, loras: dict[str, Path], tmp_path: Path
) -> None:
    admin, employee = ApiCaller(service, ADMIN), ApiCaller(service, EMPLOYEE)
    question = {"question": "Name a colour."}
    try:
        base_answer = employee.post("/api/ask", json=question).json()
        assert base_answer["adapter_version"] == "base"
        source = copy_of(loras, tmp_path)
        imported = admin.post("/admin/adapters/import", json={"path": str(source), "version": "acme-1"})
        assert imported.status_code == 201, imported.text

        promoted = admin.post("/admin/promote", json={"version": "acme-1"}, timeout=120)

        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["active"] == "acme-1"
        models = httpx.get(f"{service.settings.vllm_base_url}/v1/models").json()["data"]
        served = {m["id"]: m.get("root") for m in models}
        copied = service.settings.adapters_dir / "acme-1"
        assert served[service.service.services.registry.served_name("acme-1")] == str(copied.resolve())
        answer = employee.post("/api/ask", json=question).json()
        assert answer["adapter_version"] == "acme-1"
        # Random LoRA weights: the imported adapter is really in the answer, not the base model alone.
        assert answer["answer"] != base_answer["answer"]
        assert admin.post("/admin/rollback", json={}).json()["active"] == "base"
    finally:
        admin.close()
        employee.close()
