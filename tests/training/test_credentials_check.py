"""Machine credentials in a correction are found and named by kind; ordinary prose is not taken for one."""

from __future__ import annotations

import pytest

from training.redact import find_credentials

# Built from pieces, so that secret scanners on this repository do not take the fakes for real ones.
SLACK_BOT = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_APP = "xapp-" + "1-A0123456789-1234567890123-" + "abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
AWS_ACCESS = "AKIA" + "Z7Q3XK5W2M8N4P6R"
AWS_SECRET = "uE4b9Zq" + "L7mN2xR5/tY8wA3sD6fG1hJ0kP+9cV4bN"  # 40 characters
GCP_KEY = "AIza" + "SyB3xQ9mZ7kL2vN8pR4tW6yA1cE5gH0jU3o"
GITHUB = "ghp_" + "Ab3dEf6hIj9lMn2pQr5tUv8xYz1BcD4fGh7K"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    + ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
OPENAI = "sk-proj-" + "Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901"
HEX_KEY = "9f8e7d6c" + "5b4a39281706f5e4d3c2b1a0"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
PASSWORD = "hunter2-" + "Xy9!"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (f"Use the bot token {SLACK_BOT} for the integration.", "a Slack token"),
        (f"Socket Mode needs {SLACK_APP}.", "a Slack token"),
        (f"The deploy user is {AWS_ACCESS}.", "an AWS key"),
        (f"aws secret access key {AWS_SECRET}", "an AWS key"),
        (f"Maps work with {GCP_KEY}.", "a Google Cloud API key"),
        (f"Clone with {GITHUB}.", "a GitHub token"),
        (f"Charge with {STRIPE}.", "a Stripe key"),
        (f"Send the header Authorization: Bearer {JWT}", "a JSON web token"),
        (f"The OpenAI key is {OPENAI}", "an API key or token"),
        (f"api_key = {HEX_KEY}", "an API key or token"),
        (f"Call https://api.example.com/v1/report?token={HEX_KEY}", "an API key or token"),
        (f"Log in with this key:\n{PRIVATE_KEY}\nand you are in.", "a private key"),
        (f"password: {PASSWORD}", "a password"),
        (f'The admin PASSWORD="{PASSWORD}" works on every printer.', "a password"),
        ("Connect to postgresql://app:S3cr3t!pw@db.acme.example:5432/app", "a connection string with a password"),
        ("mysql://root:Tr0ub4dor@10.0.0.5/hr", "a connection string with a password"),
        ("The cache is redis://:hunter2pass@cache.acme.example:6379/0", "a connection string with a password"),
        ("mongodb+srv://admin:p4ssw0rd@cluster0.abcde.mongodb.net/test", "a connection string with a password"),
        ("amqp://deploy:rabbit42@mq.acme.example:5672/", "a connection string with a password"),
    ],
)
def test_each_kind_of_credential_is_found_and_named(text: str, kind: str) -> None:
    assert find_credentials(text) == [kind]


def test_several_kinds_are_each_named_once_and_no_value_is_returned() -> None:
    text = f"Token {SLACK_BOT} and again {SLACK_BOT}; password: {PASSWORD}; {GITHUB}"
    found = find_credentials(text)
    assert found == ["a Slack token", "a GitHub token", "a password"]
    for value in (SLACK_BOT, PASSWORD, GITHUB):
        assert all(value not in kind for kind in found)


@pytest.mark.parametrize(
    "text",
    [
        "Go to https://wiki.acme.example/vpn and file a ticket",
        "Call +1 415 555 0100",
        "The Wi-Fi password is on the badge card in reception",
        "The guest Wi-Fi password is bluepelican42.",
        "Password: see the vault entry 'Printer admin'.",
        "Password: ask in #it-help.",
        "password: <your AD password>",
        "Set DB_PASSWORD=${DB_PASSWORD} in the service's environment.",
        "The template is postgresql://user:password@localhost/app; ask ops for the real one.",
        "Visitor pass: 2 hours, from reception.",
        "Email security@acme.example or jane.doe@acme.example, or Dana at dana@example.com.",
        "Ask in <#C0123ABCD|it-help> or #it-help, or ping <@U0123ABCD>.",
        "The API key is in 1Password under 'Stripe prod'; never paste it anywhere.",
        "The spec is at https://docs.google.com/document/d/1aBcD3fGh4IjKlMnOpQrStUvWxYz12345Ab/edit",
        "Reset it at https://id.acme.example/reset?user=jdoe&lang=en",
        "The VPN is vpn.acme.example:443; the ticket was INC0012345, opened 2024-05-01 at 12:34.",
        "Payroll is paid on the 27th; the Berlin office is at Kastanienallee 12, 10435 Berlin.",
        "Use SmolLM2-135M-Instruct with max_tokens=200 on https://llm.acme.example:8000/v1.",
    ],
)
def test_ordinary_prose_is_not_a_credential(text: str) -> None:
    assert find_credentials(text) == []
