"""Invented company facts for the memory of reviewed answers: the slow test and bench/memory.py share them.

Each fact: the question a reviewer corrected, the approved answer, a word that proves the fact was given, and
wordings never stored anywhere (unseen paraphrases). Unrelated questions are of two kinds: general ones, and
company questions no entry covers (the near misses a memory must not answer with another fact).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    question: str
    answer: str
    key: str
    paraphrases: tuple[str, ...]


FACTS = [
    Fact(
        "How do I request a new laptop?",
        "Request a laptop in the #it-laptops channel; the IT desk ships it within five working days.",
        "it-laptops",
        (
            "What's the process for getting a new laptop?",
            "I need a new laptop, who do I ask?",
            "Where can I order a replacement laptop?",
        ),
    ),
    Fact(
        "Who approves travel expenses?",
        "Travel expenses are approved by Marta Kowalski in finance.",
        "kowalski",
        (
            "Whose approval do I need for a travel expense?",
            "Who signs off on my business trip costs?",
            "Who do I send travel expense claims to for approval?",
        ),
    ),
    Fact(
        "What is the address of the Berlin office?",
        "The Berlin office is at Kastanienallee 12, 10435 Berlin.",
        "kastanienallee",
        (
            "Where is our Berlin office located?",
            "What's the street address of the office in Berlin?",
            "Which street is the Berlin office on?",
        ),
    ),
    Fact(
        "On which day of the month is payroll paid?",
        "Payroll is paid on the 27th of each month.",
        "27th",
        ("When do we get paid each month?", "What day does salary arrive?", "Which date is payday?"),
    ),
    Fact(
        "What is the guest Wi-Fi network called?",
        "The guest Wi-Fi network is called Pelican-Guest.",
        "pelican",
        (
            "What's the name of the Wi-Fi for visitors?",
            "Which wireless network should guests join?",
            "What is the visitor Wi-Fi SSID?",
        ),
    ),
    Fact(
        "Where do I report a production outage?",
        "Report production outages in the #ops-fire channel and page the on-call engineer.",
        "ops-fire",
        (
            "Which channel is for reporting an outage?",
            "Production is down, where do I report it?",
            "How do I raise an incident when the site is down?",
        ),
    ),
    Fact(
        "How many vacation days do employees get?",
        "Employees get 28 vacation days per year.",
        "28",
        (
            "How much annual leave do we have?",
            "What is our yearly holiday allowance?",
            "How many days off per year do I get?",
        ),
    ),
    Fact(
        "Who is the security officer?",
        "Our security officer is Tomasz Brandt; write to security@acme.example.",
        "brandt",
        (
            "Who is responsible for information security here?",
            "Who should I contact about a security concern?",
            "Who is our CISO?",
        ),
    ),
    Fact(
        "What time does the office open?",
        "The office opens at 7:30 and closes at 19:00.",
        "7:30",
        (
            "When does the office open in the morning?",
            "What are the office opening hours?",
            "From what time can I get into the office?",
        ),
    ),
    Fact(
        "Which tool do we use for code review?",
        "We review code in Gerrit at review.acme.example.",
        "gerrit",
        (
            "What do we use for code reviews?",
            "Where do I submit my code for review?",
            "Which code review system does the company use?",
        ),
    ),
    Fact(
        "How do I book a meeting room?",
        "Book meeting rooms in the Roomie app; rooms are released after 10 minutes without check-in.",
        "roomie",
        (
            "How can I reserve a conference room?",
            "What's the way to book a room for a meeting?",
            "Where do I reserve meeting rooms?",
        ),
    ),
    Fact(
        "What is the parental leave policy?",
        "Parents get 20 weeks of fully paid parental leave.",
        "20 weeks",
        (
            "How long is paid parental leave?",
            "How much leave do new parents get?",
            "What do we offer for maternity and paternity leave?",
        ),
    ),
]

GENERAL = [
    "What is the capital of France?",
    "How many days are in a week?",
    "Name a primary colour.",
    "Write a haiku about autumn.",
    "How do I reverse a list in Python?",
    "What is 12 times 12?",
    "Explain what photosynthesis is.",
    "Translate 'good morning' into Spanish.",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water?",
    "Give me a tip for writing a clear email.",
    "What does HTTP stand for?",
]

# Company questions that no fact answers: a memory must not answer them with a neighbouring fact.
NEAR_MISSES = [
    "What is the address of the Munich office?",
    "How do I request a new monitor?",
    "Who approves hardware purchases?",
    "What is the password policy for laptops?",
    "Where do I report a bug in the mobile app?",
    "How many sick days do employees get?",
    "What time does the canteen close?",
    "Which tool do we use for project tracking?",
    "How do I book a desk for tomorrow?",
    "What is the pension plan?",
    "Who is the head of marketing?",
    "When is the next all-hands meeting?",
]
