"""Block Kit: long answers split within Slack's limits, and the footer of an answer built on a reviewed one."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from bot import views
from serving.memory import MemoryHit
from store.models import MemoryMode, utcnow


def _section_texts(blocks: list[views.Block]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "section"]


def test_a_long_answer_is_split_into_sections_within_the_limits() -> None:
    paragraph = "word " * 500  # 2,500 characters
    text = "\n\n".join([paragraph.strip()] * 4)  # ~10,000 characters

    blocks = views.answer_blocks(text=text, interaction_id=7, adapter_version="v0003")

    sections = _section_texts(blocks)
    assert len(sections) >= 4
    assert all(len(s) <= views.SECTION_CHARS for s in sections)
    assert " ".join(sections).split() == text.split()
    assert sections[0] == paragraph.strip()  # cut at the paragraph break
    assert len(json.dumps(blocks)) < 13_000 + 2_000  # JSON overhead aside, the text stays under ~13,000


def test_an_answer_over_the_message_limit_is_cut_with_a_note() -> None:
    text = "x" * 30_000

    blocks = views.answer_blocks(text=text, interaction_id=7, adapter_version="base")

    sections = _section_texts(blocks)
    assert all(len(s) <= views.SECTION_CHARS for s in sections)
    total = sum(len(s) for s in sections)
    assert total <= views.MESSAGE_TEXT_CHARS + 100
    assert "more characters not shown" in sections[-1]
    assert blocks[-1]["type"] == "context" and "`base`" in blocks[-1]["elements"][0]["text"]


def test_streaming_shows_the_tail_of_a_long_partial_answer() -> None:
    partial = "a" * 20_000 + "THE END"
    sections = _section_texts(views.streaming_blocks(partial))
    assert sections[-1].endswith("THE END")
    assert sum(len(s) for s in sections) <= views.MESSAGE_TEXT_CHARS + 10


def test_slack_control_characters_are_escaped() -> None:
    [section] = _section_texts(views.text_sections("if a < b && c > d: <!channel>"))
    assert section == "if a &lt; b &amp;&amp; c &gt; d: &lt;!channel&gt;"


def test_split_text_prefers_boundaries() -> None:
    pieces = views.split_text("aaaa bbbb\ncccc dddd", limit=10)
    assert pieces == ["aaaa bbbb", "cccc dddd"]
    assert views.split_text("", limit=10) == [""]
    assert views.split_text("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_the_stub_knows_the_answer_block_id() -> None:
    from tests.bot.slack_stub import ANSWER_BLOCK_ID

    assert ANSWER_BLOCK_ID == views.ANSWER_ACTIONS_BLOCK


def _hit(*, approved_at: datetime) -> MemoryHit:
    return MemoryHit(
        entry_id=12,
        score=0.93,
        wording="How do I get a laptop?",
        answer="Ask the IT desk.",
        approved_by="U123",
        approved_at=approved_at,
    )


def _footer(blocks: list[views.Block]) -> str:
    assert blocks[-1]["type"] == "context"
    text: str = blocks[-1]["elements"][0]["text"]
    return text


def test_an_answer_built_on_a_reviewed_answer_says_who_reviewed_it_and_when() -> None:
    hit = _hit(approved_at=datetime(utcnow().year, 11, 12, 9, 30, tzinfo=UTC))

    prompted = _footer(
        views.answer_blocks(
            text="Ask IT.", interaction_id=7, adapter_version="v0003", memory=hit, memory_mode=MemoryMode.prompt
        )
    )
    given = _footer(
        views.answer_blocks(
            text=hit.answer, interaction_id=8, adapter_version="v0003", memory=hit, memory_mode=MemoryMode.direct
        )
    )

    assert prompted == "adapter `v0003` · ref 7 · based on an answer reviewed by <@U123> on 12 Nov"
    # Given as is: no model wrote it, so the footer names no adapter.
    assert given == "reviewed answer by <@U123> on 12 Nov · ref 8"
    assert _footer(views.answer_blocks(text="x", interaction_id=9, adapter_version="base")) == "adapter `base` · ref 9"


def test_a_review_from_another_year_shows_the_year() -> None:
    hit = _hit(approved_at=datetime(2020, 3, 1, tzinfo=UTC))
    blocks = views.answer_blocks(text="x", interaction_id=1, adapter_version="base", memory=hit, memory_mode=None)
    assert _footer(blocks).endswith("reviewed by <@U123> on 1 Mar 2020")


def test_the_correction_modal_says_what_a_correction_does_to_the_entry_the_answer_came_from() -> None:
    at = datetime(utcnow().year, 11, 12, tzinfo=UTC)
    matched = views.CorrectionOutlook(
        entry_id=12, wording="How do I get a <laptop>?", approved_by="U123", approved_at=at, active=True
    )
    target = views.CorrectionTarget(interaction_id=5, channel="C1", thread_ts="1.0")

    def shown(outlook: views.CorrectionOutlook) -> str:
        modal = views.correction_modal(target=target, question="q", answer="a", outlook=outlook)
        [context] = [b for b in modal["blocks"] if b["type"] == "context" and "entry" in str(b)]
        text: str = context["elements"][0]["text"]
        return text

    head = "This answer came from reviewed entry #12 (“How do I get a &lt;laptop&gt;?”, reviewed by <@U123> on 12 Nov)."
    assert head in shown(dataclasses.replace(matched, decided=True, replaces=12))
    assert shown(dataclasses.replace(matched, decided=True, replaces=12)).endswith("Your correction will replace it.")
    assert shown(dataclasses.replace(matched, decided=True)).endswith(
        "Your correction becomes a new entry for this question; the other stays as it is."
    )
    assert "will replace reviewed entry #40" in shown(dataclasses.replace(matched, decided=True, replaces=40))
    assert "decided when it is approved" in shown(matched)  # the lookup took too long: no forecast
    assert "on 12 Nov), since retired." in shown(dataclasses.replace(matched, active=False))
    assert "entry" not in str(views.correction_modal(target=target, question="q", answer="a")["blocks"])
