"""Block Kit builders: answer messages, the correction modal, the App Home tab and command replies.

Slack's limits shape these: a section holds 3,000 characters, a message's blocks fail at roughly 13,000,
a view holds 100 blocks, a modal title 24 characters, a plain-text input 3,000 characters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from serving.api.admin.protocol import AdapterVersionPublic, RunPublic, StatusResponse
from serving.notify import AdminEvent, AdminEventKind
from store.models import MemoryMode, utcnow

if TYPE_CHECKING:
    from serving.memory import MemoryHit

Block = dict[str, Any]

SECTION_CHARS = 3000
# Below Slack's ~13,000 (msg_blocks_too_long), leaving room for buttons and the footer.
MESSAGE_TEXT_CHARS = 11_000
INPUT_CHARS = 3000
HOME_MAX_CORRECTIONS = 20
HOME_MAX_VERSIONS = 15

THINKING_TEXT = "Thinking…"
ANSWER_ACTIONS_BLOCK = "tuneloop_answer_actions"
CORRECTION_MODAL = "correction_submit"
CORRECTION_INPUT_BLOCK = "correction"
CORRECTION_INPUT_ACTION = "text"

VOTE_UP = "vote_up"
VOTE_DOWN = "vote_down"
CORRECT_OPEN = "correct_open"
REVIEW_APPROVE = "review_approve"
REVIEW_REJECT = "review_reject"
MEMORY_EDIT = "memory_edit"
MEMORY_RETIRE = "memory_retire"
MEMORY_SEARCH = "memory_search"  # the search field's block and action
MEMORY_EDIT_MODAL = "memory_edit_submit"
MEMORY_EDIT_BLOCK = "memory_answer"
MEMORY_EDIT_ACTION = "text"
SEARCH_CHARS = 500


def escape(text: str) -> str:
    """Slack's three control characters; everything else in mrkdwn passes through as the model wrote it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_text(text: str, *, limit: int = SECTION_CHARS) -> list[str]:
    """Cut text into pieces of at most `limit` characters, at a paragraph, line or word boundary when there is one."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        # The coarsest boundary in the second half of the window; none there: a hard cut beats tiny pieces.
        cut = next((at for sep in ("\n\n", "\n", " ") if (at := window.rfind(sep)) >= limit // 2), limit)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def text_sections(text: str, *, tail: bool = False) -> list[Block]:
    """Sections for `text`, within the message limit; over it, keep the head (or the tail while streaming)."""
    body = escape(text.strip()) or "_(no text)_"
    if len(body) > MESSAGE_TEXT_CHARS:
        dropped = len(body) - MESSAGE_TEXT_CHARS
        if tail:
            body = "…" + body[-MESSAGE_TEXT_CHARS:]
        else:
            body = body[:MESSAGE_TEXT_CHARS] + f"\n\n_…({dropped:,} more characters not shown)_"
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}} for piece in split_text(body)]


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _button(text: str, action_id: str, value: str, *, style: str | None = None) -> Block:
    button: Block = {"type": "button", "text": {"type": "plain_text", "text": text, "emoji": True}}
    button.update(action_id=action_id, value=value)
    if style:
        button["style"] = style
    return button


def thinking_blocks() -> list[Block]:
    return [_context(f":hourglass_flowing_sand: {THINKING_TEXT}")]


def streaming_blocks(partial: str) -> list[Block]:
    return [*text_sections(partial, tail=True), _context(":writing_hand: writing…")]


def short_date(at: datetime) -> str:
    """Day and short month ("12 Nov"), with the year only when it is not this year's."""
    return f"{at.day} {at:%b}" + (f" {at.year}" if at.year != utcnow().year else "")


def memory_credit(*, hit: MemoryHit, mode: MemoryMode | None) -> str:
    """Who reviewed the answer an answer used: given as is (direct), or as a fact in the prompt."""
    reviewed = f"{who(hit.approved_by)} on {short_date(hit.approved_at)}"
    if mode is MemoryMode.direct:
        return f"reviewed answer by {reviewed}"
    return f"based on an answer reviewed by {reviewed}"


def answer_blocks(
    *,
    text: str,
    interaction_id: int,
    adapter_version: str,
    memory: MemoryHit | None = None,
    memory_mode: MemoryMode | None = None,
) -> list[Block]:
    tail = answer_tail_blocks(
        interaction_id=interaction_id, adapter_version=adapter_version, memory=memory, memory_mode=memory_mode
    )
    return [*text_sections(text), *tail]


def answer_tail_blocks(
    *,
    interaction_id: int,
    adapter_version: str,
    memory: MemoryHit | None = None,
    memory_mode: MemoryMode | None = None,
) -> list[Block]:
    """What follows an answer's text: the vote and correction buttons, and the footer (a streamed answer's end)."""
    value = str(interaction_id)
    facts = [f"adapter `{adapter_version}`", f"ref {interaction_id}"]
    if memory is not None:
        credit = memory_credit(hit=memory, mode=memory_mode)
        # A reviewed answer given as is: no model wrote it, so no adapter is named.
        facts = [credit, f"ref {interaction_id}"] if memory_mode is MemoryMode.direct else [*facts, credit]
    return [
        {
            "type": "actions",
            "block_id": ANSWER_ACTIONS_BLOCK,
            "elements": [
                _button("👍", VOTE_UP, value),
                _button("👎", VOTE_DOWN, value),
                _button("Correct this answer", CORRECT_OPEN, value),
            ],
        },
        _context(" · ".join(facts)),
    ]


def is_answer_message(message: dict[str, Any]) -> bool:
    """True for the bot's finished answers (not placeholders, not error replies)."""
    return any(block.get("block_id") == ANSWER_ACTIONS_BLOCK for block in message.get("blocks") or [])


def failure_text(*, message: str, hint: str | None, ref: int | str | None) -> str:
    parts = [message[0].upper() + message[1:] if message else "Something went wrong"]
    if hint:
        parts.append(hint)
    text = ". ".join(p.rstrip(".") for p in parts) + "."
    return f"{text} (ref {ref})" if ref is not None else text


def failure_blocks(text: str) -> list[Block]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": f":warning: {escape(text)}"}}]


# --- corrections ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CorrectionTarget:
    """What the modal's private_metadata carries from the click to the submission."""

    interaction_id: int
    channel: str | None
    thread_ts: str | None

    def to_metadata(self) -> str:
        return json.dumps({"interaction_id": self.interaction_id, "channel": self.channel, "thread_ts": self.thread_ts})

    @classmethod
    def from_metadata(cls, metadata: str) -> CorrectionTarget:
        data = json.loads(metadata)
        return cls(
            interaction_id=int(data["interaction_id"]), channel=data.get("channel"), thread_ts=data.get("thread_ts")
        )


@dataclass(frozen=True, kw_only=True)
class CorrectionOutlook:
    """The reviewed entry a corrected answer came from, and what an approved correction will do to it."""

    entry_id: int
    wording: str  # the entry's first wording of its question
    approved_by: str
    approved_at: datetime
    active: bool
    decided: bool = False
    replaces: int | None = None  # the entry the correction replaces (when decided); None: a new entry


def outlook_text(outlook: CorrectionOutlook) -> str:
    number = f"#{outlook.entry_id}"
    wording = f"“{_clip(outlook.wording, 200)}”, " if outlook.wording.strip() else ""
    text = (
        f"This answer came from reviewed entry {number} ({wording}reviewed by {who(outlook.approved_by)} on "
        f"{short_date(outlook.approved_at)}){', since retired' if not outlook.active else ''}."
    )
    if not outlook.decided:
        return text + " Whether your correction replaces it or becomes a new entry is decided when it is approved."
    if outlook.replaces == outlook.entry_id:
        return text + " Your correction will replace it."
    if outlook.replaces is None:
        return text + " Your correction becomes a new entry for this question; the other stays as it is."
    return (
        text + f" Your correction will replace reviewed entry #{outlook.replaces}, which holds this very question; "
        f"{number} stays as it is."
    )


def correction_modal(
    *, target: CorrectionTarget, question: str, answer: str, outlook: CorrectionOutlook | None = None
) -> Block:
    memory = [_context(f":bookmark: {outlook_text(outlook)}")] if outlook is not None else []
    return {
        "type": "modal",
        "callback_id": CORRECTION_MODAL,
        "private_metadata": target.to_metadata(),
        "title": {"type": "plain_text", "text": "Correct this answer"},
        "submit": {"type": "plain_text", "text": "Save correction"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Question*\n{escape(question)[:2900]}"}},
            *memory,
            {
                "type": "input",
                "block_id": CORRECTION_INPUT_BLOCK,
                "label": {"type": "plain_text", "text": "The answer the bot should give"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": CORRECTION_INPUT_ACTION,
                    "multiline": True,
                    "max_length": INPUT_CHARS,
                    "initial_value": answer[:INPUT_CHARS],
                },
            },
            _context("Reviewers' corrections count at once; others wait for a reviewer's approval."),
        ],
    }


def notice_modal(*, title: str, text: str) -> Block:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": title[:24]},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


# --- App Home ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PendingCorrection:
    correction_id: int
    author_id: str
    text: str
    question: str
    answer: str


def _clip(text: str, limit: int) -> str:
    text = escape(text.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, kw_only=True)
class ReviewedEntry:
    """An entry of the memory of reviewed answers, as App Home lists it."""

    entry_id: int
    wording: str  # its first wording, or the one nearest a search
    answer: str
    approved_by: str
    approved_at: datetime
    score: float | None = None  # similarity to the search, when it is a search result


def home_view(
    *,
    user_id: str,
    is_reviewer: bool,
    is_admin: bool,
    pending: Sequence[PendingCorrection],
    versions: Sequence[AdapterVersionPublic],
    notice: str | None = None,
    reviewed: Sequence[ReviewedEntry] = (),
    search: str | None = None,
) -> Block:
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "tuneloop"}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "Mention me in a channel or write to me here. Vote 👍/👎 on answers and correct the wrong "
                "ones: I learn from them every night. `/tuneloop help` lists the commands.",
            },
        },
    ]
    if notice:
        blocks.append(_context(f":information_source: {escape(notice)}"))
    if is_reviewer:
        blocks += [{"type": "divider"}, _header(f"Corrections waiting for review ({len(pending)})")]
        if not pending:
            blocks.append(_context("Nothing to review."))
        for item in pending[:HOME_MAX_CORRECTIONS]:
            blocks += _pending_blocks(item)
        if len(pending) > HOME_MAX_CORRECTIONS:
            blocks.append(_context(f"…and {len(pending) - HOME_MAX_CORRECTIONS} more after these."))
        blocks += _reviewed_blocks(reviewed, search=search)
    if is_admin:
        blocks += [{"type": "divider"}, _header("Adapter versions")]
        for version in versions[-HOME_MAX_VERSIONS:]:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": version_line(version)}})
    return {"type": "home", "blocks": blocks}


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _pending_blocks(item: PendingCorrection) -> list[Block]:
    value = str(item.correction_id)
    return [
        {
            "type": "section",
            "block_id": f"correction_{item.correction_id}",
            "text": {
                "type": "mrkdwn",
                "text": f"*Question:* {_clip(item.question, 700)}\n*Bot's answer:* {_clip(item.answer, 900)}\n"
                f"*Correction by <@{item.author_id}>:* {_clip(item.text, 1200)}",
            },
        },
        {
            "type": "actions",
            "elements": [
                _button("Approve", REVIEW_APPROVE, value, style="primary"),
                _button("Reject", REVIEW_REJECT, value, style="danger"),
            ],
        },
    ]


def _reviewed_blocks(entries: Sequence[ReviewedEntry], *, search: str | None) -> list[Block]:
    field: Block = {
        "type": "plain_text_input",
        "action_id": MEMORY_SEARCH,
        "max_length": SEARCH_CHARS,
        "placeholder": {"type": "plain_text", "text": "A question, in any words (Enter searches)"},
        # Enter sends the text at once: a Home tab has no submit button.
        "dispatch_action_config": {"trigger_actions_on": ["on_enter_pressed"]},
    }
    if search:
        field["initial_value"] = search[:SEARCH_CHARS]
    blocks: list[Block] = [
        {"type": "divider"},
        _header("Reviewed answers"),
        {
            "type": "input",
            "block_id": MEMORY_SEARCH,
            "dispatch_action": True,
            "optional": True,
            "label": {"type": "plain_text", "text": "Search by meaning"},
            "element": field,
        },
    ]
    if search:
        blocks.append(_context(f"Closest to “{_clip(search, 200)}”. An empty search shows the newest again."))
    else:
        blocks.append(_context("The newest reviewed answers I give. Retire one and it no longer answers."))
    if not entries:
        blocks.append(_context("Nothing close to that." if search else "No reviewed answers yet."))
    for entry in entries:
        blocks += _entry_blocks(entry)
    return blocks


def _entry_blocks(entry: ReviewedEntry) -> list[Block]:
    value = str(entry.entry_id)
    facts = f"#{entry.entry_id} · reviewed by {who(entry.approved_by)} on {short_date(entry.approved_at)}"
    if entry.score is not None:
        facts += f" · similarity {entry.score:.2f}"
    wording = f"*“{_clip(entry.wording, 300)}”*\n" if entry.wording.strip() else ""
    retire = _button("Retire", MEMORY_RETIRE, value, style="danger")
    retire["confirm"] = {
        "title": {"type": "plain_text", "text": "Retire this answer?"},
        "text": {
            "type": "mrkdwn",
            "text": f"Reviewed answer #{entry.entry_id} will no longer answer questions. Its history stays.",
        },
        "confirm": {"type": "plain_text", "text": "Retire"},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger",
    }
    return [
        {
            "type": "section",
            "block_id": f"memory_entry_{entry.entry_id}",
            "text": {"type": "mrkdwn", "text": f"{wording}{_clip(entry.answer, 700)}\n{facts}"},
        },
        {"type": "actions", "elements": [_button("Edit", MEMORY_EDIT, value), retire]},
    ]


def memory_edit_modal(entry: ReviewedEntry) -> Block:
    """Edit a reviewed answer; the entry's id travels in private_metadata (checked again on submission)."""
    question = _clip(entry.wording, 2800) if entry.wording.strip() else "_(no wording kept)_"
    return {
        "type": "modal",
        "callback_id": MEMORY_EDIT_MODAL,
        "private_metadata": str(entry.entry_id),
        "title": {"type": "plain_text", "text": f"Edit answer #{entry.entry_id}"[:24]},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Question*\n{question}"}},
            {
                "type": "input",
                "block_id": MEMORY_EDIT_BLOCK,
                "label": {"type": "plain_text", "text": "The answer I give"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": MEMORY_EDIT_ACTION,
                    "multiline": True,
                    "max_length": INPUT_CHARS,
                    "initial_value": entry.answer,
                },
            },
            _context("It answers with the new text from the next question on; you become its reviewer."),
        ],
    }


# --- command replies -----------------------------------------------------------------------------
HELP_TEXT = "\n".join(
    [
        "*/tuneloop* commands:",
        "• `help`: this list",
        "• `status`: the active adapter, the last run, new feedback since then",
        "• `adapters`: the adapter versions and their metrics _(admins)_",
        "• `retrain`: run a tuning cycle now; I post the result when it is done _(admins)_",
        "• `promote VERSION`: serve VERSION _(admins)_",
        "• `rollback [VERSION]`: serve the previous version, or VERSION _(admins)_",
    ]
)


def _metrics(metrics: dict[str, Any]) -> str:
    """The figures people compare: gate scores beside the active version's, then the training loss."""
    shown: list[str] = []
    gate = metrics.get("gate") or {}
    if "candidate" in gate:
        shown += [
            f"{kind} {score:.2f} (vs {gate['active'].get(kind, 0):.2f})" for kind, score in gate["candidate"].items()
        ]
    sft = (metrics.get("training") or metrics).get("sft") or {}
    if isinstance(sft, dict) and sft.get("train_loss") is not None:
        shown.append(f"train loss {sft['train_loss']:.3f}")
    shown += [
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if isinstance(v, int | float)
    ]
    return ", ".join(shown[:6]) if shown else "no metrics"


def version_line(version: AdapterVersionPublic) -> str:
    marker = ":white_check_mark: *active*" if version.active else version.status
    return f"`{version.version}` {marker} · {_metrics(version.metrics)}"


def adapters_text(versions: Sequence[AdapterVersionPublic]) -> str:
    if not versions:
        return "No adapter versions yet."
    return "*Adapter versions*\n" + "\n".join(f"• {version_line(v)}" for v in versions)


def run_line(run: RunPublic | None) -> str:
    if run is None:
        return "no run yet"
    text = f"run {run.id} *{run.status}*"
    if run.adapter_version:
        text += f", adapter `{run.adapter_version}`"
    if run.error:
        text += f": {escape(run.error)[:500]}"
    return text


def status_text(status: StatusResponse) -> str:
    return "\n".join(
        [
            f"*Active adapter:* `{status.active_adapter}`",
            f"*Last run:* {run_line(status.last_run)}",
            f"*New feedback since the last training:* {status.new_feedback_since_last_training}",
        ]
    )


def run_result_text(run: RunPublic) -> str:
    head = {
        "succeeded": ":white_check_mark:",
        "failed": ":x:",
        "skipped": ":fast_forward:",
        "rejected": ":no_entry:",
    }.get(run.status, "")
    text = f"{head} Tuning {run_line(run)}".strip()
    if run.metrics:
        text += f"\nMetrics: {_metrics(run.metrics)}"
    return text


# --- the admins' channel -------------------------------------------------------------------------
ADMIN_EVENT_ACTIONS_BLOCK = "tuneloop_admin_event_actions"
ADMIN_ROLLBACK = "admin_rollback"
REASON_CHARS = 500
NO_METRICS = "no metrics"  # what _metrics says when there is nothing to show


@dataclass(frozen=True, kw_only=True)
class RollbackTarget:
    """What the Roll back button carries: the version the message announced, and the one to serve again."""

    promoted: str
    to: str

    def to_value(self) -> str:
        return json.dumps({"promoted": self.promoted, "to": self.to})

    @classmethod
    def from_value(cls, value: str) -> RollbackTarget:
        data = json.loads(value)
        return cls(promoted=str(data["promoted"]), to=str(data["to"]))


def who(user_id: str) -> str:
    """A Slack user id as a mention; any other id (a CLI or API user) as itself."""
    if user_id[:1] in ("U", "W") and user_id.isalnum() and user_id.isupper():
        return f"<@{user_id}>"
    return f"`{escape(user_id)}`"


def _by(event: AdminEvent) -> str:
    return "the tuning cycle" if event.source == "cycle" else f"{who(event.actor)} ({escape(event.source)})"


def _run_context(event: AdminEvent) -> str | None:
    if event.run_id is None:
        return None
    text = f"run {event.run_id}"
    if event.triggered_by:
        text += f", started by {who(event.triggered_by)}" + (f" ({escape(event.trigger)})" if event.trigger else "")
    elif event.trigger:
        text += f", {escape(event.trigger)}"
    return text


def admin_event_text(event: AdminEvent) -> str:
    """One line on what happened, who did it and why: the message's text, and its notification."""
    version = f"`{escape(event.version)}`" if event.version else "no version yet"
    reason = _clip(event.reason, REASON_CHARS) if event.reason else None
    if event.kind is AdminEventKind.promoted:
        text = f":rocket: {version} now serves, promoted by {_by(event)}"
        return text + (f": {reason}." if reason and event.source == "cycle" else ".")
    if event.kind is AdminEventKind.rolled_back:
        earlier = f", instead of `{escape(event.previous)}`" if event.previous else ""
        return f":leftwards_arrow_with_hook: {version} serves again, rolled back by {_by(event)}{earlier}."
    if event.kind is AdminEventKind.rejected:
        kept = f"`{escape(event.previous)}` keeps serving" if event.previous else "the active version keeps serving"
        return f":no_entry: {version} was rejected by the evaluation gate; {kept}." + (f" {reason}" if reason else "")
    run = f"Tuning run {event.run_id}" if event.run_id is not None else "A tuning cycle"
    return f":x: {run} failed: {reason or 'no cause recorded'}. The active version keeps serving."


def admin_event_blocks(event: AdminEvent) -> list[Block]:
    """What happened, the gate's scores when there are some, the run, and a Roll back button on a promotion."""
    blocks: list[Block] = [{"type": "section", "text": {"type": "mrkdwn", "text": admin_event_text(event)}}]
    scores = _metrics(dict(event.metrics))
    if scores != NO_METRICS:
        blocks.append(_context(f"Scores: {scores}"))
    facts = [f for f in (_run_context(event), _previous_context(event)) if f]
    if facts:
        blocks.append(_context(" · ".join(facts)))
    if event.kind is AdminEventKind.promoted and event.version and event.previous:
        target = RollbackTarget(promoted=event.version, to=event.previous)
        button = _button(f"Roll back to {event.previous}", ADMIN_ROLLBACK, target.to_value(), style="danger")
        button["confirm"] = {
            "title": {"type": "plain_text", "text": "Roll back?"},
            "text": {
                "type": "mrkdwn",
                "text": f"Serve `{escape(event.previous)}` instead of `{escape(event.version)}`?",
            },
            "confirm": {"type": "plain_text", "text": "Roll back"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
        blocks.append({"type": "actions", "block_id": ADMIN_EVENT_ACTIONS_BLOCK, "elements": [button]})
    return blocks


def _previous_context(event: AdminEvent) -> str | None:
    if event.kind is AdminEventKind.promoted and event.previous:
        return f"before: `{escape(event.previous)}`"
    return None


def rolled_back_blocks(blocks: Sequence[Block], *, note: str) -> list[Block]:
    """The announcing message once its Roll back button was used: the button gives way to who rolled back."""
    kept = [block for block in blocks if block.get("block_id") != ADMIN_EVENT_ACTIONS_BLOCK]
    return [*kept, _context(note)]
