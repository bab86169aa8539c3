"""Secrets and personal data out of training text and log lines: typed placeholders in their place.

detect-secrets' plugins find the token shapes (Slack, AWS, GitHub, Stripe, JWT...) and score entropy;
phonenumbers finds phone numbers; our own rules cover what those miss in chat prose: emails,
private-key blocks, `password: X` assignments, passwords inside URLs (`postgresql://app:X@db`), Slack app
tokens, GCP keys, unquoted high-entropy keys.

Emails: a role address on one of the company's own domains (`security@acme.example`, `it-help@eu.acme.example`)
names a team, not a person, and is kept where a Redactor is told those domains; every other address goes.

`find_credentials` names the machine credentials in a text (for refusing a correction that holds one) with the
same detectors, but counts less as one, because a finding refuses the whole text.

The plugins are called directly, not through `scan_line`: its ad-hoc mode reports every word of a
sentence for the entropy plugins, and it rewrites detect-secrets' global settings on each call, which a
logging filter running on many threads must not do.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Number

import phonenumbers
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.base import BasePlugin
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

EMAIL = "EMAIL"
PHONE = "PHONE"
SLACK_TOKEN = "SLACK_TOKEN"
AWS_KEY = "AWS_KEY"
GCP_KEY = "GCP_KEY"
PRIVATE_KEY = "PRIVATE_KEY"
PASSWORD = "PASSWORD"
SECRET = "SECRET"

DEFAULT_PHONE_REGIONS = ("US",)
# Base64-ish tokens this long that mix letters and digits are scored; words never are.
MIN_ENTROPY_TOKEN = 20
BASE64_ENTROPY_LIMIT = 4.5
HEX_ENTROPY_LIMIT = 3.0

_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
_PUTTY_KEY = re.compile(r"PuTTY-User-Key-File-\d:.*?(?:Private-MAC:\s*\S+|\Z)", re.DOTALL)
# The value runs to the next space, or inside quotes; trailing sentence punctuation stays in the text, and a
# placeholder from an earlier rule is not a value.
_VALUE = (
    r"(?!\[[A-Z_]+\])"
    r"(?:(?P<quote>[\"'`])(?P<qvalue>[^\"'`\n]+)(?P=quote)|(?P<value>[^\s\"'`]+?)(?=[.,;)\]]*(?:\s|$)))"
)
_PASSWORD_ASSIGNMENT = re.compile(
    r"(?i)\b(?P<key>passwor[dt]|passwd|pwd|pw|pass|passcode|passphrase|kennwort)\b(?P<sep>\s*[:=]\s*)" + _VALUE
)
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(?P<key>secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|client[_-]?secret|auth[_-]?token)"
    r"\b(?P<sep>\s*[:=]\s*)" + _VALUE
)
# A URL with a password in it (postgresql://app:X@db, redis://:X@cache, https://user:X@host): the password goes,
# the scheme, user and host stay. Percent-encoding keeps `/` and `@` out of a URL's password.
_URL_PASSWORD = re.compile(
    r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\[\]]*:(?!\[[A-Z_]+\]@)(?P<password>[^\s/@]+)@(?=[A-Za-z0-9\[])"
)
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# detect-secrets knows xox[abposr]- tokens with digit groups only; app-level and refresh tokens look different.
_SLACK = re.compile(r"\b(?:xox[abposre]|xapp)-[A-Za-z0-9-]{8,}")
_GCP_KEY = re.compile(r"\bAIza[0-9A-Za-z_\-]{35}")
# An AWS secret access key: 40 base64 characters, named as such nearby.
_AWS_SECRET = re.compile(
    r"(?i)(?:aws|secret[_ ]?access[_ ]?key)[^\n]{0,40}?(?<![A-Za-z0-9/+])([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
_TOKEN = re.compile(rf"[A-Za-z0-9+/=_\-]{{{MIN_ENTROPY_TOKEN},}}")
# A file path or URL path (`/tmp/tmpq8v2x_kz/var`, `~/x`, `./x`, `path=/v1/models`) is a run of names, not one
# token: scored whole, its many distinct letters read as a key. Its components are scored one by one instead.
_PATH = re.compile(r"(?<![^\s\"'`=(\[<,:])(?:~|\.{1,2})?/(?![/\s])[^\s\"'`]*")
_HEX = re.compile(r"[0-9a-fA-F]+")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-+/=.:]")
# A %-style conversion (`%s`, `%(name)r`, `%.1f`, `%%`) in a log message template: never redacted itself.
_FORMAT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_FORMAT_SPEC_SPLIT = re.compile(f"({_FORMAT_SPEC.pattern})")
_REDACTED_ATTRIBUTE = "tuneloop_redacted"


# Mailboxes of a team or a function, not of a person. A local part (its +tag dropped) made only of these words,
# alone or joined by `.`, `-` or `_` (`it-help`, `security-team`, `hr.benefits`), is a role address; any other
# shape (`jane.doe`, `jdoe`, `hr.jane`) is taken for a person's.
ROLE_MAILBOX_WORDS = frozenset(
    {
        "abuse",
        "accounting",
        "accounts",
        "admin",
        "administrator",
        "benefits",
        "billing",
        "careers",
        "compliance",
        "contact",
        "daemon",
        "desk",
        "devops",
        "do",
        "events",
        "facilities",
        "feedback",
        "finance",
        "hello",
        "help",
        "helpdesk",
        "hostmaster",
        "hr",
        "info",
        "infra",
        "infosec",
        "it",
        "itsupport",
        "jobs",
        "legal",
        "mailer",
        "marketing",
        "media",
        "noc",
        "no",
        "noreply",
        "not",
        "office",
        "oncall",
        "ops",
        "operations",
        "payroll",
        "people",
        "postmaster",
        "press",
        "privacy",
        "procurement",
        "purchasing",
        "reception",
        "recruiting",
        "reply",
        "sales",
        "security",
        "service",
        "servicedesk",
        "soc",
        "support",
        "team",
        "travel",
        "webmaster",
    }
)
_MAILBOX_WORD_SEPARATORS = re.compile(r"[._-]")


def placeholder(kind: str) -> str:
    return f"[{kind}]"


def is_role_mailbox(local_part: str) -> bool:
    """`security`, `it-help`, `no-reply+alerts`: a team's mailbox name; `jane.doe`, `jdoe`: a person's."""
    name = local_part.lower().split("+", 1)[0]
    return bool(name) and all(word in ROLE_MAILBOX_WORDS for word in _MAILBOX_WORD_SEPARATORS.split(name))


@dataclass(frozen=True)
class _Detector:
    plugin: BasePlugin
    kind: str
    label: str  # what a person calls it, for a refusal: "a GitHub token"


_DETECTORS = (
    _Detector(SlackDetector(), SLACK_TOKEN, "a Slack token"),
    _Detector(AWSKeyDetector(), AWS_KEY, "an AWS key"),
    _Detector(GitHubTokenDetector(), SECRET, "a GitHub token"),
    _Detector(GitLabTokenDetector(), SECRET, "a GitLab token"),
    _Detector(JwtTokenDetector(), SECRET, "a JSON web token"),
    _Detector(StripeDetector(), SECRET, "a Stripe key"),
    _Detector(OpenAIDetector(), SECRET, "an OpenAI key"),
    _Detector(TwilioKeyDetector(), SECRET, "a Twilio key"),
    _Detector(SendGridDetector(), SECRET, "a SendGrid key"),
    _Detector(MailchimpDetector(), SECRET, "a Mailchimp key"),
    _Detector(NpmDetector(), SECRET, "an npm token"),
    _Detector(PypiTokenDetector(), SECRET, "a PyPI token"),
    _Detector(DiscordBotTokenDetector(), SECRET, "a Discord bot token"),
    _Detector(TelegramBotTokenDetector(), SECRET, "a Telegram bot token"),
)
_BASE64_ENTROPY = Base64HighEntropyString(limit=BASE64_ENTROPY_LIMIT)
_HEX_ENTROPY = HexHighEntropyString(limit=HEX_ENTROPY_LIMIT)


class Redactor:
    """Replaces secrets and personal data in text with `[KIND]` placeholders, counting them by kind.

    `company_email_domains`: role addresses on these domains and their subdomains are kept (see
    `is_role_mailbox`); personal addresses on them, and every address on any other domain, are replaced.
    """

    def __init__(
        self,
        *,
        phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
        entropy: bool = True,
        company_email_domains: Iterable[str] = (),
    ) -> None:
        self._phone_regions = tuple(phone_regions)
        self._entropy = entropy
        self._company_domains = tuple(d.lower().lstrip("@").rstrip(".") for d in company_email_domains if d)

    def is_role_address(self, email: str) -> bool:
        """A team's address on one of the company's domains: kept, because it is not personal data."""
        local_part, _, domain = email.rpartition("@")
        domain = domain.lower()
        on_company_domain = any(domain == d or domain.endswith(f".{d}") for d in self._company_domains)
        return on_company_domain and is_role_mailbox(local_part)

    def redact(self, text: str, counts: Counter[str] | None = None) -> str:
        """The text with every finding replaced; `counts` (if given) gains one per replacement."""
        if not text:
            return text
        tally: Counter[str] = Counter() if counts is None else counts
        text = _substitute(_PRIVATE_KEY_BLOCK, text, PRIVATE_KEY, tally)
        text = _substitute(_PUTTY_KEY, text, PRIVATE_KEY, tally)
        text = _substitute(_URL_PASSWORD, text, PASSWORD, tally, group=1)
        text = _substitute_value(_PASSWORD_ASSIGNMENT, text, PASSWORD, tally)
        text = _substitute_when(_EMAIL, text, EMAIL, tally, when=lambda email: not self.is_role_address(email))
        text = _substitute(_SLACK, text, SLACK_TOKEN, tally)
        text = _substitute(_GCP_KEY, text, GCP_KEY, tally)
        text = _substitute(_AWS_SECRET, text, AWS_KEY, tally, group=1)
        text = self._library_findings(text, tally)
        text = _substitute_value(_SECRET_ASSIGNMENT, text, SECRET, tally)
        if self._entropy:
            text = _high_entropy_tokens(text, tally)
        return self._phones(text, tally)

    def _library_findings(self, text: str, tally: Counter[str]) -> str:
        for detector in _DETECTORS:
            values = {value for line in text.splitlines() for value in detector.plugin.analyze_string(line) if value}
            # Longest first, so that a value inside another is not replaced half-way.
            for value in sorted(values, key=len, reverse=True):
                text = _replace_token_containing(text, value, detector.kind, tally)
        return text

    def _phones(self, text: str, tally: Counter[str]) -> str:
        for region in self._phone_regions:
            spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, region)]
            for start, end in reversed(spans):
                text = text[:start] + placeholder(PHONE) + text[end:]
                tally[PHONE] += 1
        return text


def _substitute(pattern: re.Pattern[str], text: str, kind: str, tally: Counter[str], *, group: int = 0) -> str:
    def replace(match: re.Match[str]) -> str:
        tally[kind] += 1
        whole = match.group(0)
        if group == 0:
            return placeholder(kind)
        start, end = match.start(group) - match.start(0), match.end(group) - match.start(0)
        return whole[:start] + placeholder(kind) + whole[end:]

    return pattern.sub(replace, text)


def _substitute_value(pattern: re.Pattern[str], text: str, kind: str, tally: Counter[str]) -> str:
    """`password: X` -> `password: [PASSWORD]`: the key stays, so the sentence still reads."""

    def replace(match: re.Match[str]) -> str:
        tally[kind] += 1
        quote = match.group("quote") or ""
        return f"{match.group('key')}{match.group('sep')}{quote}{placeholder(kind)}{quote}"

    return pattern.sub(replace, text)


def _substitute_when(
    pattern: re.Pattern[str], text: str, kind: str, tally: Counter[str], *, when: Callable[[str], bool]
) -> str:
    def replace(match: re.Match[str]) -> str:
        if not when(match.group(0)):
            return match.group(0)
        tally[kind] += 1
        return placeholder(kind)

    return pattern.sub(replace, text)


def _replace_token_containing(text: str, value: str, kind: str, tally: Counter[str]) -> str:
    # Some plugins report a prefix only (GitHub: "ghp"): widen each hit to the whole token around it.
    position = text.find(value)
    while position != -1:
        start, end = position, position + len(value)
        while start > 0 and _TOKEN_CHARS.match(text[start - 1]):
            start -= 1
        while end < len(text) and _TOKEN_CHARS.match(text[end]):
            end += 1
        while end > position + len(value) and text[end - 1] in ".:":  # sentence punctuation stays
            end -= 1
        text = text[:start] + placeholder(kind) + text[end:]
        tally[kind] += 1
        position = text.find(value, start + len(placeholder(kind)))
    return text


def _high_entropy_tokens(text: str, tally: Counter[str]) -> str:
    def tokens(part: str) -> str:
        return _substitute_when(_TOKEN, part, SECRET, tally, when=_is_high_entropy)

    pieces: list[str] = []
    done = 0
    for path in _PATH.finditer(text):
        pieces.append(tokens(text[done : path.start()]))
        pieces.append("/".join(tokens(component) for component in path.group(0).split("/")))
        done = path.end()
    pieces.append(tokens(text[done:]))
    return "".join(pieces)


def _is_high_entropy(token: str) -> bool:
    if not (any(c.isdigit() for c in token) and any(c.isalpha() for c in token)):
        return False  # plain words and plain numbers are not keys
    if _HEX.fullmatch(token):
        return _HEX_ENTROPY.calculate_shannon_entropy(token) > HEX_ENTROPY_LIMIT
    return _BASE64_ENTROPY.calculate_shannon_entropy(token) > BASE64_ENTROPY_LIMIT


# A value that stands for a password rather than being one: `<password>`, `${DB_PASSWORD}`, `[PASSWORD]`, `****`.
_PLACEHOLDER_VALUE = re.compile(r"<[^>]*>|\$?\{[^}]*\}|\[[^\]]*\]|[*xX.\u2022]+")
_PLACEHOLDER_WORDS = frozenset({"password", "passwd", "pass", "pwd", "pw", "secret", "token"})
# Shorter `password: X` values (a door code, "pass: 2 days") are not refused; redaction still replaces them.
MIN_REFUSED_VALUE = 6
# A web link's path (a document id, a wiki page) is not a key: the entropy rule skips it when refusing.
_WEB_LINK = re.compile(r"\bhttps?://[^\s<>|\"'`]+")

CONNECTION_STRING_LABEL = "a connection string with a password"
_LABELS = {
    PRIVATE_KEY: "a private key",
    PASSWORD: "a password",
    SLACK_TOKEN: "a Slack token",
    GCP_KEY: "a Google Cloud API key",
    AWS_KEY: "an AWS key",
    SECRET: "an API key or token",
}


def find_credentials(text: str) -> list[str]:
    """The kinds of machine credential in `text`, each named once for a person ("a Slack token"); never a value.

    Narrower than redaction, because one finding refuses the whole text: a `password: X` value must be at least
    6 characters with a digit or a symbol (`password: see the vault` is a sentence), placeholders (`<password>`,
    `${DB_PASSWORD}`, `user:password@`) and links are no values, and a web link's path is not scored for
    entropy. Emails and phone numbers are personal data, not credentials: not reported.
    """
    found: list[str] = []
    scratch: Counter[str] = Counter()

    def note(label: str) -> None:
        if label not in found:
            found.append(label)

    # Each finding is replaced by its placeholder, so that a later, broader rule does not name it again.
    for pattern in (_PRIVATE_KEY_BLOCK, _PUTTY_KEY):
        if pattern.search(text):
            note(_LABELS[PRIVATE_KEY])
            text = _substitute(pattern, text, PRIVATE_KEY, scratch)
    if any(not _is_placeholder(m.group("password")) for m in _URL_PASSWORD.finditer(text)):
        note(CONNECTION_STRING_LABEL)
    text = _substitute(_URL_PASSWORD, text, PASSWORD, scratch, group=1)
    for pattern, kind, group in ((_SLACK, SLACK_TOKEN, 0), (_GCP_KEY, GCP_KEY, 0), (_AWS_SECRET, AWS_KEY, 1)):
        if pattern.search(text):
            note(_LABELS[kind])
            text = _substitute(pattern, text, kind, scratch, group=group)
    for detector in _DETECTORS:
        values = {value for line in text.splitlines() for value in detector.plugin.analyze_string(line) if value}
        if values:
            note(detector.label)
            for value in sorted(values, key=len, reverse=True):
                text = _replace_token_containing(text, value, detector.kind, scratch)
    for pattern, kind in ((_PASSWORD_ASSIGNMENT, PASSWORD), (_SECRET_ASSIGNMENT, SECRET)):
        if any(_is_refused_value(m.group("qvalue") or m.group("value")) for m in pattern.finditer(text)):
            note(_LABELS[kind])
    unlinked = _WEB_LINK.sub(" ", text)
    if _high_entropy_tokens(unlinked, scratch) != unlinked:
        note(_LABELS[SECRET])
    return found


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER_VALUE.fullmatch(value)) or value.lower() in _PLACEHOLDER_WORDS


def _is_refused_value(value: str) -> bool:
    """`hunter2-Xy9!` is a password; `see` (the vault), `https://vault...`, `#it-help`, `<yours>` are not."""
    if len(value) < MIN_REFUSED_VALUE or _is_placeholder(value) or "://" in value or value.startswith(("#", "<")):
        return False
    return any(not c.isalpha() for c in value)  # letters alone are a word of the sentence


_default: Redactor | None = None


def default_redactor() -> Redactor:
    global _default
    if _default is None:
        _default = Redactor()
    return _default


def redact(text: str, counts: Counter[str] | None = None) -> str:
    return default_redactor().redact(text, counts)


class RedactingFilter(logging.Filter):
    """A log filter: the message template, each argument and any traceback are redacted before a handler writes them.

    The arguments stay arguments, so that formatters which read them (uvicorn's access log, our logfmt) still
    work. Only when a secret spans the template and an argument (`"password=%s"` with `"hunter2"`) does the
    record become one redacted string without arguments. Every email address goes, role addresses on the company's
    domains too: the filter is installed before settings are read, and no log line needs an address.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor or default_redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        # Installed on a logger and on the root handler too: a record that went through one is not redone.
        if getattr(record, _REDACTED_ATTRIBUTE, False):
            return True
        try:
            self._redact_message(record)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self._redactor.redact(record.exc_text)
            if record.stack_info:
                record.stack_info = self._redactor.redact(record.stack_info)
        except Exception:  # a filter that raises loses the line; one that passes it unredacted leaks it
            record.msg, record.args, record.exc_text = "[UNREDACTABLE LOG RECORD]", None, None
            record.exc_info = None
        setattr(record, _REDACTED_ATTRIBUTE, True)
        return True

    def _redact_message(self, record: logging.LogRecord) -> None:
        whole = record.getMessage()
        clean = self._redactor.redact(whole)
        if clean == whole:
            return
        if isinstance(record.msg, str):
            record.msg = "".join(
                piece if _FORMAT_SPEC.fullmatch(piece) else self._redactor.redact(piece)
                for piece in _FORMAT_SPEC_SPLIT.split(record.msg)
            )
        if isinstance(record.args, Mapping):
            record.args = {key: self._argument(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(self._argument(value) for value in record.args)
        try:
            rendered: str | None = record.getMessage()
        except (TypeError, ValueError):
            rendered = None
        if rendered is None or self._redactor.redact(rendered) != rendered:
            record.msg, record.args = clean, None

    def _argument(self, value: object) -> object:
        if isinstance(value, str):
            return self._redactor.redact(value)
        if value is None or isinstance(value, Number):
            return value  # `%d` and `%.1f` need the number; a number alone is no secret
        text = str(value)
        clean = self._redactor.redact(text)
        return value if clean == text else clean
