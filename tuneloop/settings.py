"""The one configuration object: built once in each entry point and passed down, never a global."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.memory import MemorySettings
from training.trainer import TrainSpec

DEFAULT_BASE_MODEL_DIRNAME = "SmolLM2-135M-Instruct"


class StoreSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Unset: SQLite in the data dir. PostgreSQL: postgresql+psycopg://user@host:5432/db",
    )


class StorageSettings(BaseModel):
    shared_dir: Path | None = Field(
        default=None,
        description="Where adapters/ and runs/ live. With `tuneloop worker` on another machine: a folder that the "
        "worker and every vLLM host see at the same absolute path (an NFS mount). Unset: the data dir.",
    )


class ServingSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    vllm_host: str = "127.0.0.1"
    vllm_port: int = 8100
    vllm_url: str | None = Field(
        default=None, description="Use an already running vLLM server instead of starting one."
    )
    vllm_urls: list[str] = Field(
        default_factory=list,
        description="Several running vLLM servers (replicas): requests go to each in turn; a version is loaded "
        "and confirmed on every one before traffic moves to it. Overrides vllm_url.",
    )
    merged_active: bool = Field(
        default=True,
        description="Serve the active version merged into the weights of a second vLLM engine without LoRA "
        "(the base model's speed); candidates, the gate and rollbacks stay on the LoRA engine.",
    )
    merged_vllm_port: int = 8101
    merged_vllm_url: str | None = Field(
        default=None,
        description="An already running vLLM without --enable-lora and with VLLM_SERVER_DEV_MODE=1, for the "
        "merged active version. With an external vllm_url and no merged_vllm_url, no merged engine runs.",
    )
    replica_poll_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="How often a process checks the store's active version (SQLite). PostgreSQL is notified "
        "at once and only polls every few seconds as a safety net.",
    )
    base_model: Path | None = Field(
        default=None, description="Any local Hugging Face model folder. Unset: the bundled SmolLM2-135M."
    )
    served_model_name: str = "tuneloop-base"
    adapter_prefix: str = Field(default="tuneloop-", description="vLLM name of version v0001 is <prefix>v0001.")
    dtype: str = Field(default="float32", description="float32 is faster than bfloat16 on AVX2-only CPUs.")
    cpu_kv_cache_gib: int = 2
    max_model_len: int = 2048
    max_lora_rank: int = 16
    max_loras: int = Field(default=3, description="Active, previous (instant rollback) and a candidate.")
    startup_timeout_s: float = 600.0
    request_timeout_s: float = 120.0
    max_question_chars: int = Field(default=4000, ge=1, le=100_000)
    max_context_turns: int = Field(default=50, ge=0, description="Earlier turns accepted with a question.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Larger request bodies are refused (413).")
    max_completion_choices: int = Field(default=4, ge=1, description="The most `n` /v1/chat/completions accepts.")
    max_answer_tokens: int = 200
    temperature: float = 0.0
    system_prompt: str = "You are a helpful assistant for the employees of this company. Answer briefly."
    extra_vllm_args: list[str] = Field(default_factory=list)


def _spec_default(name: str) -> Any:
    """TrainSpec's default for one of its fields: the settings and the trainer never disagree on a default."""
    spec_field = next(f for f in dataclasses.fields(TrainSpec) if f.name == name)
    if spec_field.default is dataclasses.MISSING:
        raise TypeError(f"TrainSpec.{name} has no default")
    return spec_field.default


def _default_cpu_threads() -> int | None:
    cores = os.cpu_count() or 1
    return None if cores <= 2 else cores - 1


class TrainingSettings(BaseModel):
    nightly_cron: str = Field(default="0 2 * * *", description="Crontab, in the service's local time.")
    nightly_enabled: bool = True
    runner: Literal["local", "worker"] = Field(
        default="local",
        description="local: the service process trains its cycles; worker: it only queues them (retrain, nightly) "
        "and `tuneloop worker`, on this or another machine, trains them (storage.shared_dir for the files).",
    )
    worker_poll_interval_s: float = Field(
        default=2.0, gt=0, le=60, description="How often an idle `tuneloop worker` looks for a queued run."
    )
    # The trainer's knobs: their defaults are TrainSpec's own (one source), and tuneloop/train_spec.py maps every
    # field of the same name onto TrainSpec, so a knob added to both is passed on without another line of code.
    lora_rank: int = _spec_default("lora_rank")
    lora_alpha: int = _spec_default("lora_alpha")
    lora_dropout: float = _spec_default("lora_dropout")
    sft_epochs: int = Field(
        default=_spec_default("sft_epochs"), ge=1, description="The most SFT epochs; a loss plateau ends it earlier."
    )
    sft_stop_loss: float | None = Field(
        default=_spec_default("sft_stop_loss"),
        description="SFT stops after the first epoch whose mean loss is below this (None: never on the level).",
    )
    sft_plateau: float | None = Field(
        default=_spec_default("sft_plateau"),
        description="SFT stops after an epoch that lowered the mean loss by less than this share (None: never).",
    )
    sft_learning_rate: float = _spec_default("sft_learning_rate")
    dpo_epochs: int = _spec_default("dpo_epochs")
    dpo_learning_rate: float = _spec_default("dpo_learning_rate")
    dpo_beta: float = _spec_default("dpo_beta")
    batch_size: int = _spec_default("batch_size")
    padding_free: bool = _spec_default("padding_free")
    cpu_threads: int | None = Field(
        default=_default_cpu_threads(),
        ge=1,
        description="Threads a CPU trainer uses; by default every core but one, which vLLM keeps for answering "
        "while a cycle trains (all of them on a machine with two cores or fewer). None: every core.",
    )
    strategy: Literal["from_base", "continue", "incremental"] = Field(
        default="from_base",
        description="from_base: a fresh adapter on the whole curated history; continue: the active adapter, "
        "trained further on what is new since it was made; incremental: the same, plus a replay sample of older "
        "examples, so that a night's cost follows what is new, not the history (bench/nights.py compares them).",
    )
    replay_examples: int = Field(
        default=16,
        ge=0,
        description="incremental: older examples (corrected facts first) trained again beside what is new.",
    )
    replay_ratio: float = Field(
        default=1.0,
        ge=0,
        description="incremental: at least this many older examples per new one, when that is more than "
        "replay_examples.",
    )
    paraphrases_per_question: int = Field(default=8, description="Rewordings per corrected question (some held out).")
    gate_enabled: bool = Field(default=True, description="Promote only adapters that beat the active one.")
    gate_heldout_groups: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Share of corrected question groups kept out of training entirely, to measure how the "
        "candidate generalises. Off by default: a held-out correction is not learnt until a later cycle.",
    )
    gate_heldout_paraphrases: int = Field(default=2, description="Paraphrases per fact kept out of training.")
    gate_margin: float = Field(default=0.05, description="ROUGE-L the candidate must gain on corrected facts.")
    gate_regression_tolerance: float = Field(
        default=0.05, description="Meaning similarity (MiniLM cosine) it may lose on general questions."
    )
    gate_max_tokens: int = 64
    anchors: bool = Field(default=True, description="Train on general questions with the base model's own answers.")
    duplicate_threshold: float = Field(
        default=90.0, ge=0, le=100, description="Questions at least this alike (0-100) are one group, one example."
    )
    max_extra_phrasings: int = Field(default=4, ge=0, description="A group's other wordings kept as extra SFT rows.")
    max_corrections_per_user: int = Field(
        default=20, ge=0, description="Approved corrections by one author that count in a cycle (newest first)."
    )
    max_votes_per_user: int = Field(
        default=50, ge=0, description="Votes by one user that count in a cycle (newest first)."
    )
    min_new_examples: int = Field(
        default=3, ge=0, description="Fewer new approved examples since the last trained run: a nightly cycle skips."
    )
    company_email_domains: list[str] = Field(
        default_factory=list,
        description='Your company\'s email domains (subdomains included), e.g. ["acme.example"]. Role addresses '
        "on them (security@, it-help@, payroll@...) stay in training text; personal addresses and every other "
        "domain's are still redacted.",
    )
    seed: int = 1234  # not TrainSpec's: the service's runs are reproducible with the service's seed
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="auto: CUDA with bfloat16 when torch sees a GPU (float32 where bfloat16 is unsupported), else "
        "the CPU in float32; cpu or cuda force it (cuda fails the cycle, with the reason, when there is none).",
    )
    gpus: int | None = Field(
        default=None,
        ge=1,
        description="GPUs one cycle trains on (data parallel, one process per GPU, through accelerate); None: every "
        "GPU the trainer sees (CUDA_VISIBLE_DEVICES limits that). Ignored on the CPU.",
    )
    gpu_memory_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="The most of the GPU's memory the trainer may allocate; None: no cap. With vLLM on the same GPU, "
        "at most 1 - its --gpu-memory-utilization (docs/deployment.md).",
    )

    @field_validator("company_email_domains")
    @classmethod
    def _plain_domains(cls, domains: list[str]) -> list[str]:
        # "@acme.example" and "ACME.example." are the same domain as "acme.example".
        return [d.strip().lstrip("@").rstrip(".").lower() for d in domains if d.strip().lstrip("@").rstrip(".")]


class RetentionSettings(BaseModel):
    """What `tuneloop retention run` (and the nightly job after its cycle) removes under the data dir.

    Never removed: the active version, the previous one (instant rollback), pinned versions, and the run
    folders of the versions that stay. Anything else goes only when it is past *both* its age and its count.
    """

    nightly: bool = Field(default=True, description="Prune after every nightly job (after its cycle, if one ran).")
    keep_days: int = Field(default=30, ge=0, description="Nothing younger than this many days is pruned.")
    keep_runs: int = Field(
        default=20, ge=0, description="The newest run folders (var/runs/run-NNNN) kept whatever their age."
    )
    keep_rejected: int = Field(
        default=5, ge=0, description="The newest adapters the gate rejected, kept whatever their age."
    )
    keep_superseded: int = Field(
        default=5,
        ge=0,
        description="The newest other adapters (served once and replaced, or imported and never served) kept "
        "whatever their age, beside the active, previous and pinned ones.",
    )
    keep_log_bytes: int = Field(
        default=200_000_000,
        ge=1_000_000,
        description="The most the logs folder (vLLM's log) may hold: older logs go first, then the live log is "
        "cut to its newest quarter.",
    )


class AccessSettings(BaseModel):
    reviewers: list[str] = Field(default_factory=list, description="User ids whose corrections need no review.")
    admins: list[str] = Field(default_factory=list, description="User ids allowed to retrain/promote/roll back.")
    open_on_loopback: bool = Field(
        default=False,
        description="Laptop opt-in: with no admins configured, every signed-in user administers. Honoured only "
        "while the service listens on a loopback address; credentials are still required.",
    )


class SlackSettings(BaseModel):
    api_url: str = "https://slack.com/api/"
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    admin_channel: str | None = Field(
        default=None, description="Channel id where promotions, rejections and failed cycles are posted."
    )
    streaming: bool = Field(
        default=True,
        description="Stream answers with Slack's chat streaming methods where the workspace allows them; "
        "false: a placeholder edited with chat.update.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNELOOP_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    data_dir: Path = Path("./var")
    store: StoreSettings = Field(default_factory=StoreSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    # Slack's own variable names are accepted beside the TUNELOOP_SLACK__* ones.
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_APP_TOKEN"))

    def model_post_init(self, __context: object) -> None:
        self.slack.bot_token = self.slack.bot_token or self.slack_bot_token
        self.slack.signing_secret = self.slack.signing_secret or self.slack_signing_secret
        self.slack.app_token = self.slack.app_token or self.slack_app_token

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{(self.data_dir / 'tuneloop.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def shared_dir(self) -> Path:
        """What the service's hosts and the training worker share: adapters and run folders (default: the data dir)."""
        return self.storage.shared_dir or self.data_dir

    @property
    def adapters_dir(self) -> Path:
        return self.shared_dir / "adapters"

    @property
    def runs_dir(self) -> Path:
        return self.shared_dir / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def merged_dir(self) -> Path:
        """Adapters merged into the base weights, for the merged engine: a cache, rebuilt in seconds."""
        return self.data_dir / "merged"

    @property
    def base_model_dir(self) -> Path:
        return self.serving.base_model or self.models_dir / DEFAULT_BASE_MODEL_DIRNAME

    @property
    def vllm_base_url(self) -> str:
        return self.serving.vllm_url or f"http://{self.serving.vllm_host}:{self.serving.vllm_port}"

    @property
    def vllm_base_urls(self) -> list[str]:
        """Every vLLM server this service sends requests to (one unless `serving.vllm_urls` lists several)."""
        return list(self.serving.vllm_urls) or [self.vllm_base_url]

    @property
    def external_vllm(self) -> bool:
        """True when vLLM runs elsewhere: the service starts no vLLM of its own."""
        return bool(self.serving.vllm_url or self.serving.vllm_urls)
