"""A strict logfmt parser for the tests: `key`, `key=bare` or `key="json string"`, one space apart."""

from __future__ import annotations

import json
import re

_FIELD = re.compile(r'(?P<key>[^\s="\\]+)(?:=(?:"(?P<quoted>(?:[^"\\\x00-\x1f]|\\.)*)"|(?P<bare>[^\s="\\]+)))?(?: |$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """The fields of one line; a bare key maps to "". Raises ValueError on anything else."""
    if not line or line != line.strip():
        raise ValueError(f"empty line, or spaces around it: {line!r}")
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _FIELD.match(line, position)
        if match is None or match.end() == position:
            raise ValueError(f"not logfmt at column {position}: {line!r}")
        key = match["key"]
        if key in fields:
            raise ValueError(f"key {key!r} twice: {line!r}")
        if match["quoted"] is not None:
            fields[key] = json.loads(f'"{match["quoted"]}"')
        else:
            fields[key] = match["bare"] or ""
        position = match.end()
    return fields
