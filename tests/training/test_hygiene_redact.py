"""Secrets and personal data never reach a dataset file or a log line: planted in every field, found nowhere."""

from __future__ import annotations

import io
import logging
import logging.config
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from store import feedback as feedback_repo
from tests.training.conftest import answered
from training.datasets import (
    DPO_FILENAME,
    SFT_FILENAME,
    Datasets,
    Example,
    build_datasets,
    dpo_rows,
    redact_datasets,
    sft_rows,
    write_jsonl,
)
from training.redact import RedactingFilter, redact
from tuneloop.logs import UVICORN_LOGGERS, configure_logging

SYSTEM = "You are a test assistant."

# Built from pieces, so that secret scanners on this repository do not take the fakes for real ones.
SLACK_BOT = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_USER = "xoxp-" + "223456789012-2234567890123-2234567890123-" + "0123456789abcdef0123456789abcdef"
SLACK_APP = "xapp-" + "1-A0123456789-1234567890123-" + "abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
AWS_ACCESS = "AKIA" + "Z7Q3XK5W2M8N4P6R"
AWS_SECRET = "uE4b9Zq" + "L7mN2xR5/tY8wA3sD6fG1hJ0kP+9cV4bN7m"
GCP_KEY = "AIza" + "SyB3xQ9mZ7kL2vN8pR4tW6yA1cE5gH0jU3o"
HEX_KEY = "9f8e7d6c" + "5b4a39281706f5e4d3c2b1a0"
GITHUB = "ghp_" + "Ab3dEf6hIj9lMn2pQr5tUv8xYz1BcD4fGh7K"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
EMAIL = "dana.whitfield@example.com"
PHONES = ["(415) 555-2671", "+49 30 12345678", "+44 20 7946 0958"]
PASSWORDS = ["Tr0ub4dor&3x", "hunter2", "geheim123"]

PLANTED = [SLACK_BOT, SLACK_USER, SLACK_APP, AWS_ACCESS, AWS_SECRET, GCP_KEY, HEX_KEY, GITHUB, EMAIL, *PASSWORDS]
# What a phone number or a key block leaves if only part of it were replaced.
FRAGMENTS = ["555-2671", "12345678", "7946 0958", "MIIEowIBAAKCAQEA", "VTLw7onLRnrq0"]

TEXT_WITH_EVERYTHING = (
    f"Mail {EMAIL} or call {PHONES[0]}, {PHONES[1]} or {PHONES[2]}. "
    f"Bot token {SLACK_BOT}, user token {SLACK_USER}, app token {SLACK_APP}. "
    f"AWS key {AWS_ACCESS} with aws secret {AWS_SECRET}; GCP {GCP_KEY}; api key is {HEX_KEY}; github {GITHUB}. "
    f"password: {PASSWORDS[0]} pwd={PASSWORDS[1]} passwort: {PASSWORDS[2]}\n{PRIVATE_KEY}\nthanks"
)
KINDS = {"EMAIL", "PHONE", "SLACK_TOKEN", "AWS_KEY", "GCP_KEY", "PRIVATE_KEY", "PASSWORD", "SECRET"}


def assert_clean(text: str) -> None:
    for value in [*PLANTED, *PHONES, *FRAGMENTS]:
        assert value not in text, value


def test_each_kind_is_replaced_by_its_placeholder() -> None:
    counts: Counter[str] = Counter()
    clean = redact(TEXT_WITH_EVERYTHING, counts)
    assert_clean(clean)
    assert set(counts) == KINDS
    assert counts["PHONE"] == 3
    assert counts["SLACK_TOKEN"] == 3
    assert counts["PASSWORD"] == 3
    assert counts["PRIVATE_KEY"] == 1
    for kind in KINDS:
        assert f"[{kind}]" in clean
    # The sentence around a password still reads; only the value goes.
    assert "password: [PASSWORD] pwd=[PASSWORD] passwort: [PASSWORD]" in clean
    assert clean.endswith("[PRIVATE_KEY]\nthanks")


@pytest.mark.parametrize(
    "text",
    [
        "The guest Wi-Fi password is bluepelican42.",
        "Report outages in the #ops-fire channel.",
        "The Berlin office is at Kastanienallee 12.",
        "Travel expenses are approved by Marta Kowalski.",
        "Payroll is paid on the 27th of each month.",
        "Supercalifragilisticexpialidocious internationalization, see https://wiki.example/onboarding-2024.",
        "cycle.succeeded run=3 version=v0001 timings={'datasets_s': 0.12, 'training_s': 123.45} max_tokens=200",
        "2024-05-01 12:34:56,789 thread_ts=1712345678.123456 latency_ms=1234 at 127.0.0.1:8000",
        # File and URL paths: their many distinct letters, read as one token, used to score as a key.
        "training log: /work/main/var/runs/run-0001/train.log",
        "adapter /tmp/pytest-of-root/pytest-12/test_promote_refuses_a_broken0/adapters/v0001 is broken",
        "base model=/tmp/tmpq8v2x_kz/var/models/SmolLM2-135M-Instruct (config.json missing)",
        "cache at ~/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2",
        "GET /admin/runs/12?wait=30 from 10.0.0.7:51234",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    counts: Counter[str] = Counter()
    assert redact(text, counts) == text
    assert not counts


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        (f"key file /srv/keys/{HEX_KEY}.pem", "key file /srv/keys/[SECRET].pem"),
        (f"GET /hooks/{AWS_SECRET.replace('/', '')} 404", "GET /hooks/[SECRET] 404"),
        (f"path=/v1/x?token={SLACK_BOT}", "path=/v1/x?token=[SLACK_TOKEN]"),
    ],
)
def test_a_key_inside_a_path_is_still_found(text: str, clean: str) -> None:
    assert redact(text) == clean


def test_an_unterminated_private_key_is_removed_to_the_end() -> None:
    truncated = PRIVATE_KEY.rsplit("\n", 1)[0]
    assert redact(f"my key:\n{truncated}") == "my key:\n[PRIVATE_KEY]"


def test_redacting_twice_changes_nothing_more() -> None:
    once = redact(TEXT_WITH_EVERYTHING)
    counts: Counter[str] = Counter()
    assert redact(once, counts) == once
    assert not counts


def test_planted_secrets_appear_in_no_exported_file(tmp_path: Path, session: Session) -> None:
    context = [
        {"role": "user", "content": f"My number is {PHONES[1]} and my mail {EMAIL}."},
        {"role": "assistant", "content": f"Noted. Your token {SLACK_BOT} works."},
    ]
    # Question, context and correction carry secrets; the original answer becomes the DPO `rejected`.
    corrected = answered(
        session,
        f"Why does {SLACK_USER} fail? password: {PASSWORDS[0]}",
        f"Try {AWS_ACCESS} {GCP_KEY}.",
        context=context,
    )
    feedback_repo.create_correction(
        session=session,
        interaction_id=corrected,
        author_id="U_R",
        text=f"Rotate it. New pwd={PASSWORDS[1]}, call {PHONES[0]}, key {HEX_KEY}.\n{PRIVATE_KEY}",
        approved=True,
    )
    # An up-voted answer and a down-voted one to the same question: SFT and DPO rows.
    liked = answered(session, f"Where is the deploy key {GITHUB}?", f"In the vault, passwort: {PASSWORDS[2]}.")
    disliked = answered(session, f"Where is the deploy key {GITHUB}?", f"Ask {EMAIL}, aws secret {AWS_SECRET}.")
    feedback_repo.record_vote(session=session, interaction_id=liked, user_id="U2", vote=1)
    feedback_repo.record_vote(session=session, interaction_id=disliked, user_id="U2", vote=-1)
    everywhere = answered(session, TEXT_WITH_EVERYTHING, TEXT_WITH_EVERYTHING)
    feedback_repo.create_correction(
        session=session, interaction_id=everywhere, author_id="U_R", text=TEXT_WITH_EVERYTHING, approved=True
    )

    data = build_datasets(session=session)
    sft = write_jsonl(tmp_path / SFT_FILENAME, sft_rows(data, system_prompt=SYSTEM))
    dpo = write_jsonl(tmp_path / DPO_FILENAME, dpo_rows(data, system_prompt=SYSTEM))
    exported = sft.read_text(encoding="utf-8") + dpo.read_text(encoding="utf-8")

    assert data.counts()["sft_examples"] == 3
    assert data.counts()["dpo_rows"] == 2  # the last correction repeats its answer: nothing to prefer
    assert_clean(exported)
    for kind in KINDS:
        assert f"[{kind}]" in exported
    assert set(data.counts()["redacted"]) == KINDS
    assert data.counts()["redacted"]["PHONE"] >= 4


def test_the_facts_the_e2e_test_teaches_survive(session: Session) -> None:
    facts = [
        "The guest Wi-Fi password is bluepelican42.",
        "Report outages in the #ops-fire channel.",
        "The Berlin office is at Kastanienallee 12.",
        "Travel expenses are approved by Marta Kowalski.",
        "Payroll is paid on the 27th of each month.",
    ]
    for number, fact in enumerate(facts):
        i = answered(session, f"Question number {number}?", "No idea.")
        feedback_repo.create_correction(session=session, interaction_id=i, author_id="U_R", text=fact, approved=True)
    data = build_datasets(session=session)
    assert sorted(e.answer for e in data.examples) == sorted(facts)
    assert data.counts()["redacted"] == {}


def test_the_last_pass_cleans_model_written_text() -> None:
    data = Datasets(
        examples=[
            Example(
                interaction_id=None,
                questions=["How do I reach support?", f"Reach support at {EMAIL}?", "How do I reach support?"],
                context=[],
                answer=f"Call {PHONES[0]}.",
                corrected=False,
                anchor=True,
            )
        ]
    )
    redact_datasets(data)
    assert data.examples[0].questions == ["How do I reach support?", "Reach support at [EMAIL]?"]
    assert data.examples[0].answer == "Call [PHONE]."
    assert data.redacted == {"EMAIL": 1, "PHONE": 1}


def _captured_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_the_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    logger, stream = _captured_logger("tests.hygiene.redact")
    logger.info("question=%s from=%s", f"password: {PASSWORDS[0]}", EMAIL)
    logger.warning(f"token {SLACK_BOT} in the message itself")
    try:
        raise RuntimeError(f"auth failed for {AWS_ACCESS}")
    except RuntimeError:
        logger.exception("call failed phone=%s", PHONES[0])
    logger.info("fact=%s", "The guest Wi-Fi password is bluepelican42.")
    written = stream.getvalue()
    assert_clean(written)
    assert "question=password: [PASSWORD] from=[EMAIL]" in written
    assert "token [SLACK_TOKEN] in the message itself" in written
    assert "RuntimeError: auth failed for [AWS_KEY]" in written
    assert "call failed phone=[PHONE]" in written
    assert "The guest Wi-Fi password is bluepelican42." in written


@pytest.fixture
def global_logging() -> Iterator[None]:
    """configure_logging changes process-wide loggers: put them back as they were."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in UVICORN_LOGGERS)]
    saved = [(lg, lg.handlers[:], lg.filters[:], lg.level, lg.propagate) for lg in loggers]
    handler_filters = [(h, h.filters[:]) for lg in loggers for h in lg.handlers]
    yield
    for lg, handlers, filters, level, propagate in saved:
        lg.handlers, lg.filters, lg.level, lg.propagate = handlers, filters, level, propagate
    for handler, filters in handler_filters:
        handler.filters = filters


@pytest.mark.usefixtures("global_logging")
def test_configure_logging_installs_the_filter_on_the_root_handlers() -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    root.handlers = []
    logging.basicConfig(stream=stream, format="%(message)s")
    configure_logging("INFO")
    logging.getLogger("tests.hygiene.child").warning("mail %s", EMAIL)
    assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in root.handlers)
    assert stream.getvalue().strip() == "mail [EMAIL]"


@pytest.mark.usefixtures("global_logging")
@pytest.mark.usefixtures("global_logging")
def test_uvicorns_own_loggers_are_redacted_after_uvicorn_configures_them() -> None:
    from uvicorn.config import LOGGING_CONFIG

    configure_logging("INFO")
    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn.run does after the CLI configured logging
    uvicorn_error = logging.getLogger("uvicorn.error")
    stream = io.StringIO()
    uvicorn_error.handlers = [logging.StreamHandler(stream)]  # uvicorn's own handler writes to the real stderr
    uvicorn_error.error("request from %s failed", EMAIL)
    written = stream.getvalue()
    assert "request from [EMAIL] failed" in written
    assert EMAIL not in written
