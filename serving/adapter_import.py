"""Bringing an adapter trained elsewhere: a PEFT LoRA folder, checked against the served base model and registered.

The folder is a path on the service's host (the API is admins only). It is copied into the adapters folder first
and the copy is checked, so what was checked is what is registered and a later change of the source changes
nothing; the weights' sha256 is kept in the version's metrics. Only safetensors weights are taken (a `.bin` is a
pickle, and loading one can run code) and no code files. An imported version is `ready`, never active: it is
promoted, gated by hand or rolled back to like a trained one.

Names are taken under the tuning cycle's database lock: a cycle picks its version name when it starts training
and registers it minutes later, so an import during a cycle is refused rather than racing it for `vNNNN`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from serving.errors import Conflict, InvalidAdapter
from store import adapters as adapter_repo
from store import audit as audit_repo
from store import locks as lock_repo
from store.audit import AuditEntry
from store.db import session_scope
from store.models import BASE_VERSION, AdapterVersion

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS_FILE = "adapter_model.bin"
# Files that are code: an adapter is a config and tensors, nothing here is ever run.
CODE_SUFFIXES = frozenset({".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".sh", ".exe"})
MAX_FILES = 200
MAX_BYTES = 8 * 1024**3
# A PEFT LoRA tensor of a linear layer: base_model.model.<module path>.lora_A.weight (or lora_B).
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<half>[AB])\.weight$")
HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BaseModelShape:
    """What an adapter must fit: the base model's names and the [out, in] shape of each 2-D weight by module path."""

    folder: Path
    names: frozenset[str]  # lower-cased last path components the adapter's base_model_name_or_path may end in
    weights: dict[str, tuple[int, int]]

    @property
    def leaf_names(self) -> list[str]:
        return sorted({module.rsplit(".", 1)[-1] for module in self.weights})


class AdapterImporter:
    def __init__(
        self,
        *,
        engine: Engine,
        adapters_dir: Path,
        base_model_dir: Path,
        max_rank: int,
        cycle_lock: str,
        lock_ttl_s: float,
    ) -> None:
        self._engine = engine
        self._adapters_dir = adapters_dir
        self._base_model_dir = base_model_dir
        self._max_rank = max_rank
        self._cycle_lock = cycle_lock
        self._lock_ttl_s = lock_ttl_s
        self._holder = f"import:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._base: BaseModelShape | None = None

    def import_folder(self, path: str, *, version: str | None, audit: AuditEntry) -> AdapterVersion:
        """Check, copy and register the folder at `path` as `version` (None: the next vNNNN), with `audit`.

        The version row and `audit` (its target set to the version) are one commit. Blocking: run it in a thread.
        """
        if version == BASE_VERSION:
            raise Conflict(f"{BASE_VERSION} is the base model's own name", hint="Pick another --name, or none.")
        if version is not None:
            self._refuse_taken(version)
        source = _source_folder(path)
        base = self._base_shape()
        files = _listing(source)
        self._adapters_dir.mkdir(parents=True, exist_ok=True)
        staged = self._adapters_dir / f".import-{uuid.uuid4().hex[:12]}"
        try:
            _copy(source, files, staged)
            summary = _check(staged, base=base, max_rank=self._max_rank)
            summary |= {
                "source": str(source),
                "sha256": _sha256(staged / WEIGHTS_FILE),
                "files": len(files),
                "bytes": sum((staged / f).stat().st_size for f in files),
                "imported_by": audit.actor,
            }
            row = self._register(staged, version=version, audit=audit, summary=summary)
        finally:
            shutil.rmtree(staged, ignore_errors=True)  # gone already when it was registered: renamed into place
        log.info("adapter.imported version=%s source=%s sha256=%s", row.version, source, summary["sha256"])
        return row

    # --- the store -----------------------------------------------------------------------------
    def _refuse_taken(self, version: str) -> None:
        with session_scope(self._engine) as session:
            taken = adapter_repo.get_version(session=session, version=version) is not None
        if taken:
            raise Conflict(
                f"adapter version {version} already exists",
                hint="Pick another --name, or leave it out for the next vNNNN.",
            )
        if (self._adapters_dir / version).exists():
            raise Conflict(
                f"{self._adapters_dir / version} already exists, though no version {version} is registered",
                hint="Pick another --name, or remove that folder (a leftover of an interrupted cycle).",
            )

    def _register(
        self, staged: Path, *, version: str | None, audit: AuditEntry, summary: dict[str, Any]
    ) -> AdapterVersion:
        with self._holding_cycle_lock(), session_scope(self._engine) as session:
            # Before vLLM was ever up the store has no base row yet: the listing shows what a promotion replaces.
            adapter_repo.ensure_base_version(session=session)
            name = version or self._free_name(adapter_repo.next_version_name(session=session))
            if version is not None:
                self._refuse_taken(version)  # again, now that no one else can take it
            target = self._adapters_dir / name
            staged.rename(target)
            try:
                row = adapter_repo.register_version(
                    session=session,
                    version=name,
                    path=str(target.resolve()),
                    run_id=None,
                    metrics={"import": summary},
                    commit=False,
                )
                detail = {**audit.detail, "sha256": summary["sha256"], "source": summary["source"]}
                audit_repo.add_audit(session=session, entry=replace(audit, target=name, detail=detail))
                session.commit()
            except BaseException:
                target.rename(staged)  # not registered: the caller removes it with the staging folder
                raise
            session.refresh(row)
            return row

    def _free_name(self, name: str) -> str:
        """`name`, or the next vNNNN whose folder is free: an interrupted cycle may have left its folder behind."""
        number = int(name[1:])
        while (self._adapters_dir / f"v{number:04d}").exists():
            number += 1
        return f"v{number:04d}"

    @contextmanager
    def _holding_cycle_lock(self) -> Iterator[None]:
        with session_scope(self._engine) as session:
            taken = lock_repo.try_acquire(
                session=session, name=self._cycle_lock, holder=self._holder, ttl_s=self._lock_ttl_s
            )
        if not taken:
            raise Conflict(
                "a tuning cycle is running: it names its adapter version when it registers it",
                hint="Import again when `tuneloop runs` shows the run finished.",
            )
        try:
            yield
        finally:
            with session_scope(self._engine) as session:
                lock_repo.release(session=session, name=self._cycle_lock, holder=self._holder)

    # --- the base model ------------------------------------------------------------------------
    def _base_shape(self) -> BaseModelShape:
        if self._base is None:
            self._base = read_base_model(self._base_model_dir)
        return self._base


def read_base_model(folder: Path) -> BaseModelShape:
    """The base model's names and weight shapes, from config.json and the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    unreadable = "Pull it with `tuneloop model pull`, or point TUNELOOP_SERVING__BASE_MODEL at the served model."
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        else:
            shards = ["model.safetensors"]
        weights: dict[str, tuple[int, int]] = {}
        for shard in shards:
            with safe_open(str(folder / shard), framework="numpy") as tensors:
                for key in tensors.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                    shape = tensors.get_slice(key).get_shape()
                    if key.endswith(".weight") and len(shape) == 2:
                        weights[key.removesuffix(".weight")] = (int(shape[0]), int(shape[1]))
    except Exception as error:  # a missing file, a broken index or header: safetensors has its own error types
        raise Conflict(
            f"cannot read the base model's weights in {folder} to check adapters against: {error}", hint=unreadable
        ) from error
    names = {folder.name.lower()}
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict) and isinstance(config.get("_name_or_path"), str) and config["_name_or_path"]:
        names.add(_last_component(config["_name_or_path"]).lower())
    return BaseModelShape(folder=folder, names=frozenset(names), weights=weights)


# --- the folder ----------------------------------------------------------------------------------
def _source_folder(path: str) -> Path:
    where = "The path is read on the host where the service runs; `tuneloop adapters import` sends an absolute one."
    if "\0" in path or not Path(path).is_absolute():
        raise InvalidAdapter(f"{path[:200]!r} is not an absolute path", hint=where)
    source = Path(path)
    if not source.is_dir():
        state = "is not a folder" if source.exists() else "does not exist"
        raise InvalidAdapter(f"{source} {state} on the service's host", hint=where)
    return source.resolve()


def _listing(source: Path) -> list[Path]:
    """The folder's files, relative to it; refuses code, links leading out of it and anything over the limits."""
    files: list[Path] = []
    total = 0
    for top, dirs, names in os.walk(source, followlinks=False):
        for name in [*dirs, *names]:
            path = Path(top) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(source):
                    raise InvalidAdapter(
                        f"{path.relative_to(source)} is a link to {target}, outside the adapter folder",
                        hint="Copy the file into the folder instead of linking to it.",
                    )
                if target.is_dir():
                    raise InvalidAdapter(
                        f"{path.relative_to(source)} is a link to a folder", hint="Keep only files in the folder."
                    )
        for name in names:
            path = Path(top) / name
            relative = path.relative_to(source)
            if path.suffix.lower() in CODE_SUFFIXES:
                raise InvalidAdapter(
                    f"{relative} is code; an adapter folder holds only its config and weights",
                    hint="Remove code files (training scripts, custom modules) from the folder and import again.",
                )
            if not path.is_file():
                raise InvalidAdapter(f"{relative} is not a regular file", hint="Keep only files in the folder.")
            files.append(relative)
            total += path.stat().st_size
            if len(files) > MAX_FILES or total > MAX_BYTES:
                raise InvalidAdapter(
                    f"{source} holds more than {MAX_FILES} files or {MAX_BYTES // 1024**3} GiB: not one adapter",
                    hint="Point at the folder PEFT's save_pretrained wrote (adapter_config.json and its weights).",
                )
    if Path(CONFIG_FILE) not in files:
        raise InvalidAdapter(
            f"{source} has no {CONFIG_FILE}: it is not a PEFT adapter folder",
            hint="Point at the folder PEFT's save_pretrained wrote.",
        )
    return files


def _copy(source: Path, files: list[Path], target: Path) -> None:
    for relative in files:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target / relative)  # a link inside the folder: its content


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _last_component(name: str) -> str:
    return re.split(r"[/\\]", name.rstrip("/\\"))[-1]


# --- the checks ----------------------------------------------------------------------------------
def _check(folder: Path, *, base: BaseModelShape, max_rank: int) -> dict[str, Any]:
    """Refuse (InvalidAdapter) what the base model or vLLM cannot take; returns what the version's metrics keep."""
    config = _config(folder)
    if config.get("peft_type") != "LORA":
        raise InvalidAdapter(
            f"the adapter's peft_type is {config.get('peft_type')!r}; only LoRA adapters can be served",
            hint="Train a LoRA adapter (peft.LoraConfig).",
        )
    base_name = config.get("base_model_name_or_path")
    if not isinstance(base_name, str) or _last_component(base_name).lower() not in base.names:
        raise InvalidAdapter(
            f"the adapter was trained on {base_name!r}, but this service serves {base.folder.name!r} ({base.folder})",
            hint="Train the adapter on the served base model; its base_model_name_or_path must end in "
            f"{base.folder.name!r}.",
        )
    for unsupported, why in (("modules_to_save", "fully trained modules"), ("use_dora", "DoRA")):
        if config.get(unsupported):
            raise InvalidAdapter(
                f"the adapter uses {unsupported} ({why}), which vLLM cannot serve",
                hint=f"Train it without {unsupported}.",
            )
    rank = config.get("r")
    rank_pattern = config.get("rank_pattern") or {}
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1 or not isinstance(rank_pattern, dict):
        raise InvalidAdapter(f"the adapter's rank r is {rank!r}, not a positive integer", hint="Check adapter_config.")
    largest = max([rank, *(r for r in rank_pattern.values() if isinstance(r, int))])
    if largest > max_rank:
        raise InvalidAdapter(
            f"the adapter's rank is {largest}, over this service's max_lora_rank {max_rank} (vLLM refuses it)",
            hint=f"Train with r <= {max_rank}, or raise TUNELOOP_SERVING__MAX_LORA_RANK and restart the service.",
        )
    targets = _check_targets(config.get("target_modules"), base=base)
    modules = _check_weights(
        folder,
        base=base,
        rank=None if rank_pattern else rank,  # per-layer ranks: each pair is only checked against max_rank
        max_rank=max_rank,
        transposed=bool(config.get("fan_in_fan_out")),  # Conv1D layers (GPT-2) keep their weights [in, out]
    )
    return {
        "peft_type": "LORA",
        "base_model_name_or_path": base_name,
        "r": rank,
        "lora_alpha": config.get("lora_alpha"),
        "target_modules": targets,
        "modules": modules,
        "peft_version": config.get("peft_version"),
    }


def _config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InvalidAdapter(f"{CONFIG_FILE} is not valid JSON: {error}", hint="Save the adapter again.") from error
    if not isinstance(config, dict):
        raise InvalidAdapter(f"{CONFIG_FILE} is not a JSON object", hint="Save the adapter again.")
    return config


def _check_targets(targets: object, *, base: BaseModelShape) -> list[str] | str:
    known = f"the base model's layers are named {', '.join(base.leaf_names)}"
    if targets == "all-linear":
        return targets
    if isinstance(targets, str):  # PEFT takes a string as a regular expression over module paths
        if not any(re.fullmatch(targets, module) for module in base.weights):
            raise InvalidAdapter(f"target_modules {targets!r} matches no module of the base model", hint=known)
        return targets
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise InvalidAdapter(f"target_modules is {targets!r}, not a list of module names", hint=known)
    for target in targets:
        if not any(module == target or module.endswith(f".{target}") for module in base.weights):
            raise InvalidAdapter(f"target module {target!r} is not a module of the base model", hint=known)
    return sorted(targets)


def _check_weights(folder: Path, *, base: BaseModelShape, rank: int | None, max_rank: int, transposed: bool) -> int:
    """Every tensor is one half of a LoRA pair on a base model layer, shaped for that layer; returns the pairs."""
    from safetensors import safe_open

    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        if (folder / PICKLED_WEIGHTS_FILE).is_file():
            raise InvalidAdapter(
                f"the adapter's weights are {PICKLED_WEIGHTS_FILE}, a pickle (loading one can run code)",
                hint="Save it as safetensors: `save_pretrained(folder, safe_serialization=True)`, PEFT's default.",
            )
        raise InvalidAdapter(f"{WEIGHTS_FILE} is missing", hint="Point at the folder PEFT's save_pretrained wrote.")
    shapes: dict[str, list[int]] = {}
    try:
        with safe_open(str(weights), framework="numpy") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                shapes[key] = list(tensors.get_slice(key).get_shape())
    except Exception as error:  # safetensors raises its own error types for a broken header
        raise InvalidAdapter(
            f"{WEIGHTS_FILE} is not a readable safetensors file: {error}", hint="Copy or save the adapter again."
        ) from error
    pairs: dict[str, dict[str, list[int]]] = {}
    for key, shape in shapes.items():
        match = LORA_KEY.match(key)
        if match is None:
            raise InvalidAdapter(
                f"tensor {key} is not the A or B weight of a LoRA layer", hint="Only plain LoRA adapters can be served."
            )
        if match["module"] not in base.weights:
            raise InvalidAdapter(
                f"tensor {key} is for {match['module']}, which the base model does not have",
                hint="Train the adapter on the served base model.",
            )
        pairs.setdefault(match["module"], {})[match["half"]] = shape
    if not pairs:
        raise InvalidAdapter(f"{WEIGHTS_FILE} holds no LoRA weights", hint="Save the adapter again.")
    for module, halves in sorted(pairs.items()):
        if set(halves) != {"A", "B"}:
            raise InvalidAdapter(f"{module} has lora_{''.join(halves)} but not its other half", hint="Save it again.")
        out_features, in_features = base.weights[module]
        if transposed:
            out_features, in_features = in_features, out_features
        a, b = halves["A"], halves["B"]
        fits = len(a) == 2 and len(b) == 2 and a[1] == in_features and b[0] == out_features and a[0] == b[1]
        if not fits or a[0] > max_rank or (rank is not None and a[0] != rank):
            raise InvalidAdapter(
                f"{module}: lora_A is {a} and lora_B is {b}; this base model layer takes lora_A "
                f"[{rank or 'r'}, {in_features}] and lora_B [{out_features}, {rank or 'r'}]",
                hint="The weights do not fit the config or the base model: save the adapter again from training.",
            )
    return len(pairs)
