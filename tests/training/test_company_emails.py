"""A company's role addresses and Slack channels survive redaction; personal addresses and other domains do not."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlmodel import Session

from store import feedback as feedback_repo
from tests.training.conftest import answered
from training.datasets import build_datasets, redact_datasets, sft_rows
from training.redact import Redactor, is_role_mailbox, redact
from tuneloop.settings import Settings

SYSTEM = "You are a test assistant."
COMPANY = Redactor(company_email_domains=["acme.example"])


@pytest.mark.parametrize(
    "address",
    [
        "security@acme.example",
        "IT@acme.example",
        "helpdesk@acme.example",
        "it-help@acme.example",
        "payroll@eu.acme.example",
        "no-reply@acme.example",
        "noreply+alerts@acme.example",
        "security-team@corp.acme.example",
        "hr.benefits@acme.example",
    ],
)
def test_role_addresses_on_a_company_domain_are_kept(address: str) -> None:
    counts: Counter[str] = Counter()
    text = f"Email {address} for that."
    assert COMPANY.redact(text, counts) == text
    assert not counts


@pytest.mark.parametrize(
    "address",
    [
        "jane.doe@acme.example",  # a person, on the company's domain
        "jdoe@acme.example",
        "hr.jane@acme.example",  # a role word with a name is a person's
        "security@other.example",  # a role address elsewhere
        "security@acme.example.evil.example",  # not a subdomain of the company's
        "security@notacme.example",
    ],
)
def test_personal_addresses_and_other_domains_are_redacted(address: str) -> None:
    counts: Counter[str] = Counter()
    assert COMPANY.redact(f"Email {address} for that.", counts) == "Email [EMAIL] for that."
    assert counts == {"EMAIL": 1}


def test_without_company_domains_every_address_is_redacted_as_before() -> None:
    assert redact("Email security@acme.example.") == "Email [EMAIL]."


def test_role_mailbox_shapes() -> None:
    assert is_role_mailbox("Security") and is_role_mailbox("it_support") and is_role_mailbox("do-not-reply")
    assert not is_role_mailbox("jane.doe") and not is_role_mailbox("") and not is_role_mailbox("it--help")


@pytest.mark.parametrize(
    "text",
    [
        "Ask in #it-help or #ops-fire.",
        "Ask in <#C0123ABCD|it-help>, or <#C0123ABCD> if the name changed.",
        "Post it in <#C0123ABCDEFGHIJ|facilities-berlin-2024> and ping <@U0123ABCD>.",
    ],
)
def test_slack_channel_mentions_are_never_redacted(text: str) -> None:
    for redactor in (COMPANY, Redactor()):
        counts: Counter[str] = Counter()
        assert redactor.redact(text, counts) == text
        assert not counts


def test_the_password_in_a_connection_string_is_redacted_and_the_rest_reads() -> None:
    counts: Counter[str] = Counter()
    text = "Use postgresql://app:S3cr3t!pw@db.acme.example:5432/app or redis://:hunter2pass@cache:6379/0."
    clean = redact(text, counts)
    assert clean == "Use postgresql://app:[PASSWORD]@db.acme.example:5432/app or redis://:[PASSWORD]@cache:6379/0."
    assert counts == {"PASSWORD": 2}
    assert redact(clean) == clean


def test_the_setting_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELOOP_TRAINING__COMPANY_EMAIL_DOMAINS", '["acme.example", "@Corp.Example."]')
    assert Settings().training.company_email_domains == ["acme.example", "corp.example"]


def test_an_approved_correction_with_a_role_address_trains_with_the_address(session: Session) -> None:
    correction = "Email security@acme.example for a lost badge; jane.doe@acme.example handles the rest."
    i = answered(session, "Who do I tell about a lost badge?", "No idea.")
    feedback_repo.create_correction(session=session, interaction_id=i, author_id="U_R", text=correction, approved=True)

    data = build_datasets(session=session, redactor=COMPANY)
    redact_datasets(data, redactor=COMPANY)  # the cycle's last pass, over the same data, keeps it too
    [row] = sft_rows(data, system_prompt=SYSTEM)

    answer = row["completion"][0]["content"]
    assert answer == "Email security@acme.example for a lost badge; [EMAIL] handles the rest."
    assert data.redacted == {"EMAIL": 1}
