"""How an answer reaches Slack while the model writes it: one `Reply` per answer, in one of two ways.

- `StreamedReply`: Slack's chat streaming methods. chat.startStream carries the first words as soon as the model
  writes them, chat.appendStream adds the rest at most once per interval, chat.stopStream ends the message with the
  vote buttons and the footer. Used wherever the workspace has not refused them.
- `UpdatedReply`: a "Thinking…" placeholder edited with chat.update at most once per interval, then rendered whole.
  Used where streaming is off or was refused; a refusal of the whole workspace or of a conversation is remembered
  in `StreamingSupport`, so that later answers do not pay a failed call each time.

A partial update (an append, or an edit while the model writes) goes through a client that never retries: a 429 on
it is dropped, its text is carried by the next update once Retry-After has passed, and the final message never
waits for it. The final message goes through the ordinary client, which waits out a 429 of its own and retries.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import async_default_handlers
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from serving.answers import Answer

log = logging.getLogger(__name__)

# chat.startStream refusals that hold for every conversation of the workspace, and those that hold for one.
REFUSED_EVERYWHERE = frozenset({"unknown_method", "not_allowed", "not_allowed_token_type", "feature_not_enabled"})
REFUSED_HERE = frozenset({"channel_type_not_supported", "method_not_supported_for_channel_type"})
NO_TEXT = "(no text)"
# Characters of the answer per streaming call: escaped (at most 5x), within Slack's 12,000 for markdown_text.
MARKDOWN_CHARS = 2_000


class StreamingSupport:
    """Whether to stream into a conversation: on unless turned off, or until Slack refused it there or everywhere."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.refused_everywhere: str | None = None
        self.refused_channels: dict[str, str] = {}

    def allowed(self, channel: str) -> bool:
        return self.enabled and self.refused_everywhere is None and channel not in self.refused_channels

    def refused(self, channel: str, error: str) -> bool:
        """Remember a refusal that will hold next time; True when remembered."""
        if error in REFUSED_EVERYWHERE:
            self.refused_everywhere = error
        elif error in REFUSED_HERE:
            self.refused_channels[channel] = error
        else:
            return False
        return True


@dataclass
class Pacer:
    """When the next partial update may go out: one interval after the last, or after Retry-After on a 429."""

    interval_s: float
    next_at: float = field(default=0.0)

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def sent(self) -> None:
        self.next_at = time.monotonic() + self.interval_s

    def rate_limited(self, retry_after_s: float) -> None:
        self.next_at = time.monotonic() + max(self.interval_s, retry_after_s)


def retry_after_s(error: SlackApiError) -> float | None:
    """Retry-After of a 429 (1 s when Slack gave none); None when the error is not a rate limit."""
    response = error.response
    if response.status_code != 429 and response.get("error") != "ratelimited":
        return None
    for name, value in (response.headers or {}).items():
        if name.lower() == "retry-after":
            first = value[0] if isinstance(value, list) else value
            try:
                return float(first)
            except (TypeError, ValueError):
                break
    return 1.0


def progress_client(client: AsyncWebClient) -> AsyncWebClient:
    """The same identity without the rate-limit retry: a partial update is never worth waiting for."""
    return AsyncWebClient(
        token=client.token,
        base_url=client.base_url,
        timeout=client.timeout,
        retry_handlers=async_default_handlers(),  # connection errors only
        logger=client.logger,
    )


def _error_code(error: SlackApiError) -> str:
    return str(error.response.get("error") or f"http_{error.response.status_code}")


class Reply(Protocol):
    """One answer's message in the thread, from the first words to the final render."""

    @property
    def ts(self) -> str | None:
        """The message's ts once it exists."""

    async def open(self) -> None:
        """Before the model is asked."""

    async def progress(self, text: str) -> None:
        """The answer so far; shown now or later, as the pace allows."""

    async def message_ts(self, text: str) -> str:
        """The message's ts, posting what there is when there is no message yet (before the buttons appear)."""

    async def finish(self, answer: Answer) -> None:
        """The whole answer with its buttons and footer; always sent."""

    async def fail(self, text: str) -> str:
        """Show a failure instead of (or after) the answer; returns the message's ts."""


class UpdatedReply:
    """A placeholder edited with chat.update while the model writes, then rendered whole."""

    def __init__(
        self, *, client: AsyncWebClient, partial_client: AsyncWebClient, channel: str, thread_ts: str, pacer: Pacer
    ) -> None:
        self._client = client
        self._partial_client = partial_client
        self._channel = channel
        self._thread_ts = thread_ts
        self._pacer = pacer
        self._ts: str | None = None

    @property
    def ts(self) -> str | None:
        return self._ts

    async def open(self, partial: str | None = None) -> None:
        """Post the placeholder, or the answer so far when a stream could not be started."""
        if partial:
            text, blocks = partial, views.streaming_blocks(partial)
        else:
            text, blocks = views.THINKING_TEXT, views.thinking_blocks()
        posted = await self._client.chat_postMessage(
            channel=self._channel, thread_ts=self._thread_ts, text=text, blocks=blocks
        )
        self._ts = str(posted["ts"])
        self._pacer.sent()  # the post counts as the message's latest write

    async def progress(self, text: str) -> None:
        if self._ts is None or not text.strip() or not self._pacer.due():
            return
        try:
            await self._partial_client.chat_update(
                channel=self._channel, ts=self._ts, text=text, blocks=views.streaming_blocks(text)
            )
        except SlackApiError as error:
            _partial_failed(error, pacer=self._pacer, channel=self._channel, method="chat.update")
        else:
            self._pacer.sent()

    async def message_ts(self, text: str) -> str:
        if self._ts is None:
            await self.open(text or NO_TEXT)
        assert self._ts is not None
        return self._ts

    async def finish(self, answer: Answer) -> None:
        ts = await self.message_ts(answer.text)
        await _render_whole(self._client, channel=self._channel, ts=ts, answer=answer)

    async def fail(self, text: str) -> str:
        if self._ts is None:
            posted = await self._client.chat_postMessage(
                channel=self._channel, thread_ts=self._thread_ts, text=text, blocks=views.failure_blocks(text)
            )
            self._ts = str(posted["ts"])
        else:
            await self._client.chat_update(
                channel=self._channel, ts=self._ts, text=text, blocks=views.failure_blocks(text)
            )
        return self._ts


class StreamedReply:
    """An answer streamed with chat.startStream / chat.appendStream / chat.stopStream.

    Nothing is posted before the model's first words: chat.startStream carries them. When the stream cannot be
    started, the answer goes on as an `UpdatedReply` (remembering the refusal where it will hold); when an append
    is refused for any reason but a rate limit, appends stop and the final render replaces the message whole.
    """

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        partial_client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        recipient_user_id: str,
        recipient_team_id: str | None,
        pacer: Pacer,
        support: StreamingSupport,
    ) -> None:
        self._client = client
        self._partial_client = partial_client
        self._channel = channel
        self._thread_ts = thread_ts
        self._recipient_user_id = recipient_user_id
        self._recipient_team_id = recipient_team_id
        self._pacer = pacer
        self._support = support
        self._ts: str | None = None
        self._shown = 0  # characters of the answer (leading whitespace dropped) already in the message
        self._appends_refused = False
        self._fallback: UpdatedReply | None = None

    @property
    def ts(self) -> str | None:
        return self._fallback.ts if self._fallback is not None else self._ts

    async def open(self) -> None:
        """Nothing to post yet: the stream starts with the first words."""

    async def progress(self, text: str) -> None:
        if self._fallback is not None:
            await self._fallback.progress(text)
            return
        body = text.lstrip()
        if not body:
            return
        if self._ts is None:
            await self._start(body)
            return
        if self._appends_refused or len(body) <= self._shown or not self._pacer.due():
            return
        delta = body[self._shown : self._shown + MARKDOWN_CHARS]
        try:
            await self._partial_client.chat_appendStream(
                channel=self._channel, ts=self._ts, markdown_text=views.escape(delta)
            )
        except SlackApiError as error:
            if not _partial_failed(error, pacer=self._pacer, channel=self._channel, method="chat.appendStream"):
                self._appends_refused = True  # e.g. the stream expired: the final render replaces the message
        else:
            self._shown += len(delta)
            self._pacer.sent()

    async def _start(self, body: str) -> None:
        first = body[:MARKDOWN_CHARS]
        try:
            started = await self._partial_client.chat_startStream(
                channel=self._channel,
                thread_ts=self._thread_ts,
                markdown_text=views.escape(first),
                # Required outside DMs; harmless in them (Bolt's say_stream always passes both).
                recipient_user_id=self._recipient_user_id,
                recipient_team_id=self._recipient_team_id,
            )
        except SlackApiError as error:
            code = _error_code(error)
            remembered = self._support.refused(self._channel, code)
            log.warning(
                "slack.stream_not_started channel=%s error=%s remembered=%s: answering with chat.update",
                self._channel,
                code,
                remembered,
            )
            self._fallback = UpdatedReply(
                client=self._client,
                partial_client=self._partial_client,
                channel=self._channel,
                thread_ts=self._thread_ts,
                pacer=self._pacer,
            )
            await self._fallback.open(body)
            return
        self._ts = str(started["ts"])
        self._shown = len(first)
        self._pacer.sent()

    async def message_ts(self, text: str) -> str:
        if self._fallback is None and self._ts is None:
            await self._start(text.lstrip() or NO_TEXT)
        if self._fallback is not None:
            return await self._fallback.message_ts(text)
        assert self._ts is not None
        return self._ts

    async def finish(self, answer: Answer) -> None:
        ts = await self.message_ts(answer.text)
        if self._fallback is not None:
            await self._fallback.finish(answer)
            return
        if not self._appends_refused:
            rest = answer.text[self._shown :] if len(answer.text) > self._shown else ""
            tail = views.answer_tail_blocks(
                interaction_id=answer.interaction_id,
                adapter_version=answer.adapter_version,
                memory=answer.memory,
                memory_mode=answer.memory_mode,
            )
            try:
                # A long rest (a reviewed answer given whole, or appends held back by 429s) goes in pieces.
                while len(rest) > MARKDOWN_CHARS:
                    piece, rest = rest[:MARKDOWN_CHARS], rest[MARKDOWN_CHARS:]
                    await self._client.chat_appendStream(
                        channel=self._channel, ts=ts, markdown_text=views.escape(piece)
                    )
                await self._client.chat_stopStream(
                    channel=self._channel, ts=ts, markdown_text=views.escape(rest) or None, blocks=tail
                )
                return
            except SlackApiError as error:
                log.warning("slack.stream_stop_failed channel=%s error=%s", self._channel, _error_code(error))
        # The stream would not take the rest: replace the message with the whole answer.
        await _render_whole(self._client, channel=self._channel, ts=ts, answer=answer)

    async def fail(self, text: str) -> str:
        if self._fallback is not None:
            return await self._fallback.fail(text)
        if self._ts is None:
            posted = await self._client.chat_postMessage(
                channel=self._channel, thread_ts=self._thread_ts, text=text, blocks=views.failure_blocks(text)
            )
            self._ts = str(posted["ts"])
            return self._ts
        try:
            # The words already shown stay; the failure follows them.
            await self._client.chat_stopStream(channel=self._channel, ts=self._ts, blocks=views.failure_blocks(text))
        except SlackApiError as error:
            log.warning("slack.stream_stop_failed channel=%s error=%s", self._channel, _error_code(error))
            await self._client.chat_update(
                channel=self._channel, ts=self._ts, text=text, blocks=views.failure_blocks(text)
            )
        return self._ts


async def _render_whole(client: AsyncWebClient, *, channel: str, ts: str, answer: Answer) -> None:
    """Replace the message with the whole answer, its buttons and its footer."""
    await client.chat_update(
        channel=channel,
        ts=ts,
        text=answer.text[: views.MESSAGE_TEXT_CHARS] or NO_TEXT,
        blocks=views.answer_blocks(
            text=answer.text,
            interaction_id=answer.interaction_id,
            adapter_version=answer.adapter_version,
            memory=answer.memory,
            memory_mode=answer.memory_mode,
        ),
    )


def _partial_failed(error: SlackApiError, *, pacer: Pacer, channel: str, method: str) -> bool:
    """A partial update Slack did not take: nothing is retried. True when it was a rate limit (paced, text kept)."""
    retry_after = retry_after_s(error)
    if retry_after is not None:
        pacer.rate_limited(retry_after)
        log.warning("slack.partial_rate_limited method=%s channel=%s retry_after_s=%.0f", method, channel, retry_after)
        return True
    log.warning("slack.partial_failed method=%s channel=%s error=%s", method, channel, _error_code(error))
    return False


def open_reply(
    *,
    client: AsyncWebClient,
    support: StreamingSupport,
    channel: str,
    thread_ts: str,
    user: str,
    team: str | None,
    interval_s: float,
) -> Reply:
    """The way this answer reaches Slack (no I/O here)."""
    partial_client = progress_client(client)
    pacer = Pacer(interval_s=interval_s)
    if support.allowed(channel):
        return StreamedReply(
            client=client,
            partial_client=partial_client,
            channel=channel,
            thread_ts=thread_ts,
            recipient_user_id=user,
            recipient_team_id=team,
            pacer=pacer,
            support=support,
        )
    return UpdatedReply(client=client, partial_client=partial_client, channel=channel, thread_ts=thread_ts, pacer=pacer)
