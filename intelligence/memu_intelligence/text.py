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
    if not (t.isascii() and t.isdigit()) or len(t) > 18:  # "²".isdigit() is True
        raise UserFacingError(f"“{text.strip()}” is not an id like {prefix}12.")
    return int(t)


def strip_mention(body: str, user_id: str, display_name: str | None) -> str | None:
    """The text of a message with the bot's name (as a client's mention pill inserts it:
    full user id, localpart or display name, optionally followed by ``:`` or ``,``) taken
    out, or None when the name is not in it. Only for a message known to address the bot
    (its ``m.mentions`` or pill names it): see :func:`addressed` for plain text.
    """
    pattern = _names(user_id, display_name)
    m = re.search(rf"(?<![\w@])(?:{pattern})(?![\w-])[:,]?", body, re.IGNORECASE)
    if not m:
        return None
    return (body[: m.start()] + body[m.end() :]).strip()


def _names(user_id: str, display_name: str | None) -> str:
    localpart = user_id[1:].split(":", 1)[0]
    names = {user_id, localpart, f"@{localpart}"} | ({display_name} if display_name else set())
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def addressed(body: str, user_id: str, display_name: str | None) -> str | None:
    """The rest of a message that starts with the bot's name and ``:`` or ``,`` (``memu:
    where is the key?``, ``Memu, bins?``), or None: a name elsewhere (``memu.local``, an
    e-mail address, the product's name in a sentence) does not address the bot."""
    m = re.match(rf"\s*(?:{_names(user_id, display_name)})\s*[:,]", body, re.IGNORECASE)
    return body[m.end():].strip() if m else None


_QUESTION = re.compile(
    r"\?\s*$|\b(?:what|where|when|who|whom|whose|why|how|which)\b"
    r"|^\W*(?:is|are|was|were|do|does|did|can|could|should|would|will|has|have|tell|find|"
    r"show|any)\b", re.IGNORECASE)
_THANKS = re.compile(
    r"^\W*(?:thanks?|thank you|thx|ta|cheers|ok(?:ay)?|great|cool|nice|perfect|lovely|"
    r"brilliant|got it|good bot)\b", re.IGNORECASE)


def is_question(text: str) -> bool:
    """True for a message that asks something: ``…?``, a question word (``what``, ``where``…)
    anywhere, or a verb that starts a question (``is``, ``can``, ``tell``…) first."""
    return bool(_QUESTION.search(text.strip()))


def is_acknowledgement(text: str) -> bool:
    """True for thanks, ``ok``, emoji and the like (four words at most): nothing to answer."""
    t = text.strip()
    if not re.search(r"\w", t):
        return True  # emoji, punctuation, nothing
    return bool(_THANKS.match(t)) and len(t.split()) <= 4 and not t.endswith("?")


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
