"""Reading natural reminder times (``tomorrow 8am``, ``in 20 minutes``) with dateparser.

We do not write our own date grammar: dateparser (https://dateparser.readthedocs.io) reads
the time phrase in the family's timezone; this module only finds where the phrase ends and
the reminder text starts, and applies the family-friendly defaults documented below.
dateparser is CPU-bound, so async callers run ``parse_reminder`` in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import dateparser

from memu_intelligence.errors import UserFacingError

MAX_TIME_WORDS = 8  # the longest time phrase we try ("next friday at half past 5 pm")
DEFAULT_HOUR = 9  # a date without a time ("on friday") means 09:00, not midnight
_LEAD = re.compile(r"^(?:me|us)\s+", re.IGNORECASE)
_JOIN = re.compile(r"^(?:to|that|about|:|-)\s+", re.IGNORECASE)
_HAS_TIME = re.compile(r"\d|noon|midnight|morning|afternoon|evening|night|hour|minute|second",
                       re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    """A reminder request: when (timezone-aware, in the family's zone) and what."""

    due: dt.datetime
    text: str


def parse_when(phrase: str, tz: dt.tzinfo, now: dt.datetime) -> dt.datetime | None:
    """One time phrase to an aware datetime in ``tz``, or None when dateparser cannot read it.

    Future dates are preferred (``8am`` after 8am means tomorrow); relative phrases are
    measured from ``now``. A bare number is not a time.
    """
    if phrase.strip().isdigit():
        return None
    local_now = now.astimezone(tz)
    when: dt.datetime | None = dateparser.parse(
        phrase,
        settings={
            "TIMEZONE": str(tz),
            "TO_TIMEZONE": str(tz),
            "RETURN_AS_TIMEZONE_AWARE": True,
            "PREFER_DATES_FROM": "future",
            "RELATIVE_BASE": local_now.replace(tzinfo=None),
        },
    )
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    if when.time() == dt.time(0) and not _HAS_TIME.search(phrase):
        when = when.replace(hour=DEFAULT_HOUR)
    return when


def parse_reminder(args: str, tz: dt.tzinfo, now: dt.datetime) -> Parsed:
    """Split ``tomorrow 8am put the bins out`` into a due time and the reminder text.

    The time phrase is the longest leading run of words (up to ``MAX_TIME_WORDS``) that
    dateparser reads; ``me``/``us`` before it and ``to``/``that`` after it are dropped.

    Raises:
        UserFacingError: no time found, no text left, or the time is in the past.
    """
    rest = _LEAD.sub("", args.strip())
    words = rest.split()
    best: tuple[int, dt.datetime] | None = None
    for n in range(1, min(len(words), MAX_TIME_WORDS) + 1):
        when = parse_when(" ".join(words[:n]), tz, now)
        if when is not None:
            best = (n, when)
    if best is None:
        raise UserFacingError(
            "I couldn't tell when. Start with the time, e.g. "
            "“/remind tomorrow 8am put the bins out” or “/remind in 20 minutes check the oven”."
        )
    n, due = best
    text = _JOIN.sub("", " ".join(words[n:])).strip()
    if not text:
        raise UserFacingError("What should I remind you about? Add the text after the time.")
    if due < now - dt.timedelta(seconds=30):
        raise UserFacingError(
            f"{format_time(due, tz, now)} is in the past; give me a time in the future."
        )
    return Parsed(due, text)


def format_time(when: dt.datetime, tz: dt.tzinfo, now: dt.datetime) -> str:
    """A short local rendering: ``today 08:00``, ``tomorrow 08:00`` or ``Fri 6 Jun 08:00``."""
    local = when.astimezone(tz)
    days = (local.date() - now.astimezone(tz).date()).days
    clock = local.strftime("%H:%M:%S") if abs((when - now).total_seconds()) < 120 else (
        local.strftime("%H:%M"))
    if days == 0:
        return f"today {clock}"
    if days == 1:
        return f"tomorrow {clock}"
    return f"{local.strftime('%a')} {local.day} {local.strftime('%b %Y')} {clock}"
