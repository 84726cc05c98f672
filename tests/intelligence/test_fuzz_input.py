"""Bad input is not an outage (issue 11, class 6), property-based: whatever a person types,
the parsers return a reading, a question or a UserFacingError (a reply that says what to
change), never anything else (Hypothesis; no services needed)."""

from __future__ import annotations

import contextlib
import datetime as dt
import zoneinfo

from hypothesis import given, settings
from hypothesis import strategies as st

from memu_intelligence.callbacks import unusable
from memu_intelligence.conventions import Locale
from memu_intelligence.errors import UserFacingError
from memu_intelligence.text import addressed, is_acknowledgement, parse_command, parse_short_id
from memu_intelligence.timeparse import (
    Parsed,
    Question,
    Reading,
    Unclear,
    parse_reminder,
    read_when,
)

ZONES = [zoneinfo.ZoneInfo(z) for z in ("Europe/London", "America/New_York",
                                        "Australia/Sydney", "Pacific/Kiritimati",
                                        "Pacific/Pago_Pago")]
#: Words and pieces the grammar knows, and some it must survive.
PIECES = ["at", "on", "in", "the", "of", "tomorrow", "today", "tonight", "next", "friday",
          "half", "past", "quarter", "to", "pm", "am", "o'clock", "morning", "evening",
          "february", "31st", "29", "7", "07:30", "25:00", "13", "0", "00", "99999999999",
          "9" * 40, "/", ".", ":", "-", "12/24", "24.12.", "9999-12-31", "0000-01-01",
          "an", "hour", "and", "a", "minutes", "days", "weeks", "h", "1h30", "²", "٣",
          "\x00", "\ud800", "🎉", "ß", "\u202e", "?", ",", "%s", "'; drop table", ""]
phrases = st.lists(st.sampled_from(PIECES), max_size=9).map(" ".join)
anything = st.text(max_size=80)
locales = st.sampled_from(["en", "en-GB", "en-US", "en-AU", "de-DE", "ja-JP", "fr-FR", "",
                           "x-\x00", "en-ZZ"])
moments = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1))


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(phrases, anything), zone=st.sampled_from(ZONES), at=moments,
       tag=locales)
def test_reminders_read_or_say_what_to_change(text: str, zone: zoneinfo.ZoneInfo,
                                              at: dt.datetime, tag: str) -> None:
    now = at.replace(tzinfo=zone)
    locale = Locale.from_tag(tag)
    try:
        got = parse_reminder(text, zone, now, locale)
    except UserFacingError as e:
        assert str(e)
    else:
        assert isinstance(got, Parsed | Unclear)
        if isinstance(got, Parsed):
            assert got.text and got.due.tzinfo is not None
    reading = read_when(text, zone, now, locale)
    assert reading is None or isinstance(reading, Reading | Question)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(anything, st.sampled_from(PIECES).map(lambda p: f"/remind {p}")))
def test_commands_ids_and_mentions_never_fail(body: str) -> None:
    parse_command(body)
    addressed(body, "@memu:family.example", "Memu")
    is_acknowledgement(body)
    unusable(body)
    with contextlib.suppress(UserFacingError):
        parse_short_id(body, "m")


def test_what_the_database_cannot_take_is_said_in_words() -> None:
    assert "null" in (unusable("milk\x00") or "")
    assert "broken character" in (unusable("eggs \ud83d") or "")
    assert unusable("eggs 🥚, 牛乳, ß") is None
