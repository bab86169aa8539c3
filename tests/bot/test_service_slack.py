"""The service with and without Slack: no bot token means Slack off and everything else running."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.bot.conftest import slack_settings
from tests.bot.slack_stub import SlackStub
from tests.conftest import RunningService, free_port, make_settings


def test_without_a_bot_token_the_service_runs_and_slack_is_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, base_model_dir=tmp_path / "no-model", vllm_url=f"http://127.0.0.1:{free_port()}")
    running = RunningService(settings).start(wait_ready=False)
    try:
        assert running.service.services.info["slack"] == "off"
        assert "SLACK_BOT_TOKEN" in running.service.services.info["slack_mode"]
        assert httpx.post(f"{running.url}/slack/events", content="{}").status_code == 404
        assert httpx.get(f"{running.url}/healthz").status_code == 503  # the API itself answers
    finally:
        running.stop()


def test_with_a_bot_token_and_signing_secret_slack_is_on_in_http_mode(tmp_path: Path, slack_stub: SlackStub) -> None:
    settings = slack_settings(
        tmp_path, stub=slack_stub, base_model_dir=tmp_path / "no-model", vllm_url=f"http://127.0.0.1:{free_port()}"
    )
    running = RunningService(settings).start(wait_ready=False)
    try:
        info = running.service.services.info
        assert (info["slack"], info["slack_mode"]) == ("on", "http: POST /slack/events")
        assert httpx.post(f"{running.url}/slack/events", content="{}").status_code == 401  # unsigned
    finally:
        running.stop()


def test_the_standard_slack_variable_names_are_accepted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-env")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "secret-from-env")
    settings = make_settings(tmp_path, base_model_dir=tmp_path / "no-model", vllm_url="http://127.0.0.1:1")
    assert settings.slack.bot_token is not None and settings.slack.bot_token.get_secret_value() == "xoxb-from-env"
    assert settings.slack.signing_secret is not None
    assert settings.slack.signing_secret.get_secret_value() == "secret-from-env"
