"""Pure text helpers: command parsing, tags, short ids, mentions. No I/O, easy to test."""

from __future__ import annotations

import re
from dataclasses import dataclass

from memu_intelligence.errors import UserFacingError

_TAG = re.compile(r"(?<![\w#])#([\w][\w-]{0,31})", re.UNICODE)
_COMMAND = re.compile(r"^/([A-Za-z][\w-]*)(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """A ``/name args`` message: ``name`` lower-cased, ``args`` stripped (may be empty)."""

    name: str
    args: str


def parse_command(body: str) -> Command | None:
    """``Command`` for a message starting with ``/word``; None for ordinary chat."""
    m = _COMMAND.match(body.strip())
    if not m:
        return None
    return Command(m.group(1).lower(), (m.group(2) or "").strip())


def extract_tags(text: str) -> list[str]:
    """The ``#words`` in ``text``, lower-cased, de-duplicated, in order of appearance."""
    seen: dict[str, None] = {}
    for m in _TAG.finditer(text):
        seen.setdefault(m.group(1).lower(), None)
    return list(seen)


def parse_short_id(text: str, prefix: str) -> int:
    """Read a short id as the bot shows it (``m12``) or bare (``12``).

    Raises:
        UserFacingError: ``text`` is not such an id.
    """
    t = text.strip().lower().lstrip("#")
    if t.startswith(prefix):
        t = t[len(prefix) :]
    if not t.isdigit() or len(t) > 18:
        raise UserFacingError(f"“{text.strip()}” is not an id like {prefix}12.")
    return int(t)


def strip_mention(body: str, user_id: str, display_name: str | None) -> str | None:
    """The question in a message that mentions the bot, or None when it does not.

    A mention is the full user id, the localpart or the display name (as clients insert
    it, optionally followed by ``:`` or ``,``) at the start or anywhere in the text.
    """
    localpart = user_id[1:].split(":", 1)[0]
    names = {user_id, localpart, f"@{localpart}"}
    if display_name:
        names.add(display_name)
    pattern = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    m = re.search(rf"(?<![\w@])(?:{pattern})(?![\w-])[:,]?", body, re.IGNORECASE)
    if not m:
        return None
    return (body[: m.start()] + body[m.end() :]).strip()


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
