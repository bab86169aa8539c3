"""The deployment files, checked without a Docker engine (none runs on the CI machines).

What is checked here: the compose file parses and every service has a healthcheck and a restart policy; images
are pinned; only the app publishes a port, on 127.0.0.1; vLLM gets a GPU and the settings the app expects of it;
the app image's Python satisfies pyproject's `requires-python`; the Dockerfile copies every package pyproject
ships; the reverse-proxy rule in docs/deployment.md forwards `/slack/events` alone. `docker compose config` runs
where a Compose client is installed (it needs no engine) and is skipped, with the reason, where not. Nothing here
builds the image or starts a container: that needs an engine and a GPU.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tuneloop.settings import ServingSettings, TrainingSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
APP_SERVICE = "tuneloop"
VLLM_SERVICE = "vllm"
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}
# A tag that names a release (it holds a digit: 16.10-bookworm, v0.11.0, 3.11.14-slim) or a digest.
PINNED = re.compile(r"^[^@\s]+(:[^:@\s]*\d[^:@\s]*)?(@sha256:[0-9a-f]{64})?$")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _pinned(image: str) -> bool:
    """A release tag or a digest; never `latest`, never a bare name."""
    if "@sha256:" in image:
        return bool(PINNED.match(image))
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(ch.isdigit() for ch in tag)


def _from_images() -> list[str]:
    return [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.strip().upper().startswith("FROM ")]


def _command_flags(service: dict[str, Any]) -> dict[str, str]:
    """`--name=value` and bare `--flag` arguments of a service's command."""
    flags: dict[str, str] = {}
    for arg in service.get("command", []):
        name, _, value = str(arg).partition("=")
        flags[name] = value
    return flags


def _plain_variables(text: str) -> str:
    """`${NAME:?message}` and `${NAME:-default}` as `${NAME}`, to compare what two services are given."""
    return re.sub(r"\$\{(\w+)[^}]*\}", r"${\1}", text)


def _gpu_device_ids(service: dict[str, Any]) -> list[str]:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia" for d in devices), devices
    return [str(i) for d in devices for i in d.get("device_ids", [])]


def test_the_compose_file_runs_postgres_gpu_vllm_and_the_app() -> None:
    assert set(_services()) == {"db", VLLM_SERVICE, APP_SERVICE}


@pytest.mark.parametrize("name", ["db", VLLM_SERVICE, APP_SERVICE])
def test_every_service_has_a_healthcheck_and_a_restart_policy(name: str) -> None:
    service = _services()[name]
    assert service.get("restart") in RESTART_POLICIES, f"{name}: restart policy {service.get('restart')!r}"
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), f"{name}: healthcheck disabled"
    assert check.get("test"), f"{name}: no healthcheck"


def test_postgres_is_checked_with_pg_isready_and_the_app_waits_for_healthy_services() -> None:
    services = _services()
    assert "pg_isready" in services["db"]["healthcheck"]["test"]
    waits = services[APP_SERVICE]["depends_on"]
    assert waits == {"db": {"condition": "service_healthy"}, VLLM_SERVICE: {"condition": "service_healthy"}}


def test_every_image_is_pinned() -> None:
    images = [service["image"] for name, service in _services().items() if "build" not in service]
    images += _from_images()
    assert images
    for image in images:
        assert _pinned(image), f"{image} is not pinned to a release tag or a digest"


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("postgres:16.10-bookworm", True),
        ("vllm/vllm-openai:v0.11.0", True),
        ("python:3.11.14-slim-bookworm@sha256:" + "a" * 64, True),
        ("vllm/vllm-openai:latest", False),
        ("vllm/vllm-openai", False),
        ("postgres:bookworm", False),
        ("localhost:5000/app", False),
    ],
)
def test_the_pin_rule_itself(image: str, pinned: bool) -> None:
    assert _pinned(image) is pinned


def test_only_the_app_publishes_a_port_and_only_on_loopback() -> None:
    for name, service in _services().items():
        ports = service.get("ports", [])
        if name != APP_SERVICE:
            assert not ports, f"{name} publishes {ports}: only the app is reachable from the host"
            continue
        assert ports, "the app publishes no port"
        for port in ports:
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert text.startswith("127.0.0.1:"), f"the app's port {port} is not bound to 127.0.0.1"


def test_vllm_gets_the_gpu_and_what_the_app_expects_of_it() -> None:
    services = _services()
    vllm, app = services[VLLM_SERVICE], services[APP_SERVICE]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    flags = _command_flags(vllm)
    serving, training = ServingSettings(), TrainingSettings()
    assert "--enable-lora" in flags
    assert flags["--served-model-name"] == serving.served_model_name
    assert int(flags["--max-lora-rank"]) >= training.lora_rank
    assert int(flags["--max-loras"]) >= serving.max_loras
    assert "--gpu-memory-utilization" in flags, "vLLM would take 90% of the GPU and leave the trainer nothing"
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert app["environment"]["TUNELOOP_SERVING__VLLM_URL"] == f"http://{VLLM_SERVICE}:{flags['--port']}"
    # One GPU shared: the trainer in the app and vLLM reserve the same device.
    assert _gpu_device_ids(vllm) == _gpu_device_ids(app)


def test_vllm_and_the_trainer_leave_each_other_room_on_the_gpu() -> None:
    """By the defaults compose fills in: vLLM's share and the trainer's cap stay below the whole GPU."""
    services = _services()

    def default(text: str) -> float:
        match = re.fullmatch(r"\$\{\w+:-([0-9.]+)\}", text)
        return float(match.group(1) if match else text)

    vllm_share = default(_command_flags(services[VLLM_SERVICE])["--gpu-memory-utilization"])
    trainer_share = default(services[APP_SERVICE]["environment"]["TUNELOOP_TRAINING__GPU_MEMORY_FRACTION"])
    assert services[APP_SERVICE]["environment"]["TUNELOOP_TRAINING__DEVICE"] == "auto"
    assert vllm_share > 0 and trainer_share > 0
    assert vllm_share + trainer_share <= 0.95, "leave a few percent for the two CUDA contexts"


def test_vllm_reads_the_adapters_at_the_path_the_app_writes_them() -> None:
    services = _services()
    app_env = services[APP_SERVICE]["environment"]
    data_dir = "/data"
    dockerfile = DOCKERFILE.read_text()
    assert f"TUNELOOP_DATA_DIR={data_dir}" in dockerfile
    assert "TUNELOOP_DATA_DIR" not in app_env or app_env["TUNELOOP_DATA_DIR"] == data_dir

    def mounted_at(service: dict[str, Any], target: str) -> str | None:
        for volume in service["volumes"]:
            source, _, rest = volume.partition(":")
            if rest.split(":")[0] == target:
                return source
        return None

    assert mounted_at(services[APP_SERVICE], data_dir) == mounted_at(services[VLLM_SERVICE], data_dir) == "data"
    model = app_env["TUNELOOP_SERVING__BASE_MODEL"]
    assert _plain_variables(_command_flags(services[VLLM_SERVICE])["--model"]) == _plain_variables(model)


def test_the_app_image_python_satisfies_requires_python() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    images = _from_images()
    assert len(images) == 1, f"one stage expected, found {images}"
    match = re.match(r"^python:(\d+\.\d+\.\d+)-", images[0])
    assert match, f"the base image {images[0]} does not say its Python version (python:X.Y.Z-...)"
    assert SpecifierSet(requires).contains(match.group(1)), f"Python {match.group(1)} does not satisfy {requires}"


def test_the_dockerfile_copies_every_package_pyproject_ships() -> None:
    includes = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    copied = set(re.findall(r"^COPY (\w+) \1$", DOCKERFILE.read_text(), flags=re.M))
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert all(f"!{p}/" in ignore for p in packages), "the build context leaves out a package the image copies"


def test_the_proxy_rule_forwards_slack_events_alone() -> None:
    docs = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(r"```nginx\n(.*?)```", docs, flags=re.S)
    assert block, "docs/deployment.md has no nginx rule"
    locations = re.findall(r"location\s+(=?\s*\S+)\s*\{([^}]*)\}", block.group(1))
    forwarded = [path for path, body in locations if "proxy_pass" in body]
    assert forwarded == ["= /slack/events"], forwarded
    fallbacks = [body for path, body in locations if path.strip() == "/"]
    assert fallbacks and "return 404" in fallbacks[0]


def _compose_client() -> list[str] | None:
    """`docker compose` (the plugin) or `docker-compose`, whichever answers `version`; None if neither."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode == 0:
            return command
    return None


def test_compose_config_validates(tmp_path: Path) -> None:
    """Compose's own validation of the file; it needs the client only, not an engine."""
    command = _compose_client()
    if command is None:
        pytest.skip("no Docker Compose client here (`docker compose version` fails): the file was only parsed")
    env_file = tmp_path / "compose.env"
    env_file.write_text("POSTGRES_PASSWORD=check-only\nTUNELOOP_MODEL_NAME=SmolLM2-135M-Instruct\n")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
