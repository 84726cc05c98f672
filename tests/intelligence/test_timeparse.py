"""Reminder times as people say them: a table of phrasings, each read at a fixed "now" in
several zones (DST changes included), in the family's locale (memu_intelligence.timeparse).

Each row: phrase, the moment it is said, the family's language tag, and what must come out:
a local time ("2026-12-04 19:00", the zone's abbreviation after it where it matters; with
the other reading of a bare hour after "|"), a
question ("?" + words it must contain), or None (not a time at all).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from memu_intelligence.conventions import Locale
from memu_intelligence.errors import UserFacingError
from memu_intelligence.timefmt import format_full, other_phrase
from memu_intelligence.timeparse import (
    Parsed,
    Question,
    Reading,
    Unclear,
    parse_reminder,
    read_when,
)

LONDON = zoneinfo.ZoneInfo("Europe/London")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
SYDNEY = zoneinfo.ZoneInfo("Australia/Sydney")
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")

#: The moments the phrases are said at.
NOWS = {
    # a Friday afternoon in winter (GMT)
    "london": dt.datetime(2026, 12, 4, 14, 0, tzinfo=LONDON),
    # Saturday night; the clocks go back at 02:00 EDT on Sunday (01:00-02:00 happens twice)
    "new-york-fall-back": dt.datetime(2026, 10, 31, 22, 0, tzinfo=NEW_YORK),
    # Saturday evening; the clocks go forward at 01:00 GMT on Sunday (01:00-02:00 is skipped)
    "london-spring": dt.datetime(2027, 3, 27, 20, 0, tzinfo=LONDON),
    # Saturday night; the clocks go forward at 02:00 AEST on Sunday
    "sydney-spring": dt.datetime(2026, 10, 3, 23, 30, tzinfo=SYDNEY),
    # a Monday morning, UTC+05:30 all year
    "kolkata": dt.datetime(2026, 6, 1, 8, 15, tzinfo=KOLKATA),
    "berlin": dt.datetime(2026, 12, 4, 14, 0, tzinfo=BERLIN),
}

GB, US = "en-GB", "en-US"
TABLE: list[tuple[str, str, str, str | None]] = [
    # bare hours: the next one, with the other reading offered
    ("at 7", "london", GB, "2026-12-04 19:00|2026-12-05 07:00"),
    ("at 3", "london", GB, "2026-12-04 15:00|2026-12-05 03:00"),
    ("at 1", "london", GB, "2026-12-05 01:00|2026-12-05 13:00"),
    ("at 12", "london", GB, "2026-12-05 00:00|2026-12-05 12:00"),
    ("7 o'clock", "london", GB, "2026-12-04 19:00|2026-12-05 07:00"),
    ("7 o\u2019clock", "london", GB, "2026-12-04 19:00|2026-12-05 07:00"),
    ("at seven", "london", GB, "2026-12-04 19:00|2026-12-05 07:00"),
    ("half past five", "london", GB, "2026-12-04 17:30|2026-12-05 05:30"),
    ("quarter to 6", "london", GB, "2026-12-04 17:45|2026-12-05 05:45"),
    ("20 past 4", "london", GB, "2026-12-04 16:20|2026-12-05 04:20"),
    ("tomorrow at 8", "london", GB, "2026-12-05 08:00|2026-12-05 20:00"),
    ("on monday at 9", "london", GB, "2026-12-07 09:00|2026-12-07 21:00"),
    # stated hours and minutes are kept exactly
    ("7pm", "london", GB, "2026-12-04 19:00"),
    ("7 pm", "london", GB, "2026-12-04 19:00"),
    ("7am", "london", GB, "2026-12-05 07:00"),
    ("7 a.m.", "london", GB, "2026-12-05 07:00"),
    ("at 19", "london", GB, "2026-12-04 19:00"),
    ("19:30", "london", GB, "2026-12-04 19:30"),
    ("07:30", "london", GB, "2026-12-05 07:30"),
    ("7:30", "london", GB, "2026-12-05 07:30"),  # 24-hour clock: exact
    ("at 7.30", "london", GB, "2026-12-05 07:30"),
    ("7.30pm", "london", GB, "2026-12-04 19:30"),
    ("half past 5 pm", "london", GB, "2026-12-04 17:30"),
    ("quarter past 9 in the morning", "london", GB, "2026-12-05 09:15"),
    ("ten to 8 in the evening", "london", GB, "2026-12-04 19:50"),
    ("at seven in the evening", "london", GB, "2026-12-04 19:00"),
    ("noon", "london", GB, "2026-12-05 12:00"),
    ("midnight", "london", GB, "2026-12-05 00:00"),
    ("tomorrow at 8pm", "london", GB, "2026-12-05 20:00"),
    ("tomorrow 8am", "london", GB, "2026-12-05 08:00"),
    ("tomorrow evening at 7", "london", GB, "2026-12-05 19:00"),
    ("tonight at 9", "london", GB, "2026-12-04 21:00"),
    ("today at 5pm", "london", GB, "2026-12-04 17:00"),
    ("today at 7", "london", GB, "2026-12-04 19:00"),
    ("the day after tomorrow at 10am", "london", GB, "2026-12-06 10:00"),
    ("friday at 7pm", "london", GB, "2026-12-04 19:00"),
    ("sat 10:00", "london", GB, "2026-12-05 10:00"),
    # day words alone
    ("tomorrow morning", "london", GB, "2026-12-05 09:00"),
    ("tonight", "london", GB, "2026-12-04 20:00"),
    ("this evening", "london", GB, "2026-12-04 18:00"),
    ("thursday evening", "london", GB, "2026-12-10 18:00"),
    ("on friday", "london", GB, "2026-12-11 09:00"),
    ("next friday", "london", GB, "2026-12-11 09:00"),
    ("on the 3rd", "london", GB, "2027-01-03 09:00"),
    # dates, named and numeric, in the family's order
    ("24 december", "london", GB, "2026-12-24 09:00"),
    ("24th december at 6pm", "london", GB, "2026-12-24 18:00"),
    ("december 24th 18:00", "london", GB, "2026-12-24 18:00"),
    ("on the 24th of december at 6pm", "london", GB, "2026-12-24 18:00"),
    ("3 march 2027", "london", GB, "2027-03-03 09:00"),
    ("29 february", "london", GB, "2028-02-29 09:00"),
    ("24/12", "london", GB, "2026-12-24 09:00"),
    ("24/12 18:30", "london", GB, "2026-12-24 18:30"),
    ("1/2", "london", GB, "2027-02-01 09:00"),
    ("1/2", "london", US, "2027-01-02 09:00"),
    ("12/24 at 6pm", "london", US, "2026-12-24 18:00"),
    ("24.12.2026 18:00", "london", GB, "2026-12-24 18:00"),
    ("2026-12-24 18:00", "london", GB, "2026-12-24 18:00"),
    # relative
    ("in 20 minutes", "london", GB, "2026-12-04 14:20"),
    ("in an hour", "london", GB, "2026-12-04 15:00"),
    ("in half an hour", "london", GB, "2026-12-04 14:30"),
    ("in an hour and a half", "london", GB, "2026-12-04 15:30"),
    ("in 2 hours and 30 minutes", "london", GB, "2026-12-04 16:30"),
    ("in 1h30", "london", GB, "2026-12-04 15:30"),
    ("in 90 mins", "london", GB, "2026-12-04 15:30"),
    ("in 3 days", "london", GB, "2026-12-07 14:00"),
    ("in 2 days at 5pm", "london", GB, "2026-12-06 17:00"),
    ("in a week", "london", GB, "2026-12-11 14:00"),
    # impossible or unsaid: a question, never a guess
    ("today", "london", GB, "?What time today"),
    ("the 31st of february", "london", GB, "?no 31 February"),
    ("31/2", "london", GB, "?no 31 February"),
    ("30 february 2027 at 9", "london", GB, "?no 30 February in 2027"),
    ("12/24", "london", GB, "?day/month order"),
    ("25/12", "new-york-fall-back", US, "?month/day order"),
    ("25:00", "london", GB, "?isn't a time of day"),
    ("at 24:30", "london", GB, "?isn't a time of day"),
    ("13pm", "london", GB, "?isn't a time of day"),
    ("7:75", "london", GB, "?isn't a time of day"),
    ("the 45th", "london", GB, "?No month has a 45th"),
    # not a time at all
    ("whenever", "london", GB, None),
    ("5", "london", GB, None),
    ("5 things", "london", GB, None),
    # a 12-hour clock: 7:30 is either; the night the clocks go back
    ("7:30", "new-york-fall-back", US, "2026-11-01 07:30|2026-11-01 19:30"),
    ("at 1:30", "new-york-fall-back", US, "2026-11-01 01:30|2026-11-01 13:30"),
    ("tomorrow at 9am", "new-york-fall-back", US, "2026-11-01 09:00"),
    ("in 4 hours", "new-york-fall-back", US, "2026-11-01 01:00 EST"),  # the second 01:00
    ("11/1 at 6pm", "new-york-fall-back", US, "2026-11-01 18:00"),
    ("12/25", "new-york-fall-back", US, "2026-12-25 09:00"),
    # the night the clocks go forward: a skipped time is asked about
    ("tomorrow at 1:30am", "london-spring", GB, "?clocks go forward"),
    ("tomorrow at 01:30", "london-spring", GB, "?clocks go forward"),
    ("tomorrow at 2:30am", "london-spring", GB, "2027-03-28 02:30"),
    ("in 6 hours", "london-spring", GB, "2027-03-28 03:00 BST"),
    ("tomorrow at 9", "london-spring", GB, "2027-03-28 09:00|2027-03-28 21:00"),
    ("tomorrow at 2:30am", "sydney-spring", "en-AU", "?clocks go forward"),
    ("tomorrow at 9am", "sydney-spring", "en-AU", "2026-10-04 09:00"),
    ("1/2", "sydney-spring", "en-AU", "2027-02-01 09:00"),
    # UTC+05:30, 12-hour clock
    ("at 8", "kolkata", "en-IN", "2026-06-01 20:00|2026-06-02 08:00"),
    ("at 8:30", "kolkata", "en-IN", "2026-06-01 08:30|2026-06-01 20:30"),
    ("in 45 minutes", "kolkata", "en-IN", "2026-06-01 09:00"),
    # other languages: numbers always; words through dateparser, a lost hour asked about
    ("24.12. 18:00", "berlin", "de-DE", "2026-12-24 18:00"),
    ("morgen um 20:30", "berlin", "de-DE", "2026-12-05 20:30"),
    ("übermorgen", "berlin", "de-DE", "2026-12-06 09:00"),
    ("in 20 Minuten", "berlin", "de-DE", "2026-12-04 14:20"),
    ("demain à 8h", "berlin", "fr-FR", "2026-12-05 08:00"),
    ("morgen um 8 Uhr", "berlin", "de-DE", "?for sure"),
    ("24.12. um 18 Uhr", "berlin", "de-DE", "?for sure"),
]


def _local(text: str, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=tz)


@pytest.mark.parametrize(("phrase", "at", "language", "expected"), TABLE,
                         ids=[f"{r[0]}@{r[1]}/{r[2]}" for r in TABLE])
def test_phrasings(phrase: str, at: str, language: str, expected: str | None) -> None:
    now = NOWS[at]
    tz = now.tzinfo
    assert tz is not None
    got = read_when(phrase, tz, now, Locale.from_tag(language))
    if expected is None:
        assert got is None
    elif expected.startswith("?"):
        assert isinstance(got, Question), got
        assert expected[1:] in got.ask
    else:
        assert isinstance(got, Reading), got
        due, _, other = expected.partition("|")
        local = got.due.astimezone(tz)
        assert local.strftime("%Y-%m-%d %H:%M") == due[:16]
        # the right side of a DST change: the abbreviation when given, else the first
        assert local.tzname() == (due[17:] or _local(due, tz).tzname())
        assert (got.other.astimezone(tz).strftime("%Y-%m-%d %H:%M") if got.other else "") \
            == other


def test_the_table_is_large_enough() -> None:
    english = [r for r in TABLE if r[2].startswith("en")]
    assert len(english) >= 60 and len({r[1] for r in TABLE}) >= 5


def test_the_first_of_the_night_the_clocks_go_back() -> None:
    now = NOWS["new-york-fall-back"]
    got = read_when("at 1:30", NEW_YORK, now, Locale.from_tag(US))
    assert isinstance(got, Reading)
    assert got.due.utcoffset() == dt.timedelta(hours=-4)  # the first 01:30 (EDT)


@pytest.mark.parametrize(
    ("args", "due", "text"),
    [
        ("tomorrow 8am put the bins out", "2026-12-05 08:00", "put the bins out"),
        ("me at 5pm to call grandma", "2026-12-04 17:00", "call grandma"),
        ("at 7 call mum", "2026-12-04 19:00", "call mum"),
        ("me to call mum at 7", "2026-12-04 19:00", "call mum"),
        ("put the bins out tomorrow at 8", "2026-12-05 08:00", "put the bins out"),
        ("call the dentist on monday", "2026-12-07 09:00", "call the dentist"),
        ("in 20 minutes check the oven", "2026-12-04 14:20", "check the oven"),
        ("on friday pay the window cleaner", "2026-12-11 09:00", "pay the window cleaner"),
        ("half past 5 pm pick up the kids", "2026-12-04 17:30", "pick up the kids"),
        ("24/12 18:30 wrap the presents", "2026-12-24 18:30", "wrap the presents"),
    ],
)
def test_reminder_text_and_time_are_split(args: str, due: str, text: str) -> None:
    parsed = parse_reminder(args, LONDON, NOWS["london"], Locale.from_tag(GB))
    assert isinstance(parsed, Parsed)
    assert parsed.due == _local(due, LONDON) and parsed.text == text


@pytest.mark.parametrize(
    ("args", "ask", "text"),
    [
        ("on the 31st of February pay the rent", "no 31 February", "pay the rent"),
        ("at 25:00 feed the cat", "isn't a time of day", "feed the cat"),
        ("today pick up the parcel", "What time today", "pick up the parcel"),
    ],
)
def test_unreadable_times_become_questions(args: str, ask: str, text: str) -> None:
    got = parse_reminder(args, LONDON, NOWS["london"], Locale.from_tag(GB))
    assert isinstance(got, Unclear) and ask in got.question.ask and got.text == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("whenever you like", "couldn't tell when"),
        ("5 things to buy", "couldn't tell when"),
        ("tomorrow 8am", "What should I remind"),
        ("yesterday at 8am call mum", "in the past"),
        ("today at 8am call mum", "in the past"),
    ],
)
def test_reminders_that_cannot_be_made(args: str, message: str) -> None:
    with pytest.raises(UserFacingError, match=message):
        parse_reminder(args, LONDON, NOWS["london"], Locale.from_tag(GB))


def test_the_other_reading_reads_back_exactly() -> None:
    now = NOWS["london"]
    got = read_when("at 7", LONDON, now, Locale.from_tag(GB))
    assert isinstance(got, Reading) and got.other is not None
    again = read_when(other_phrase(got.other, LONDON), LONDON, now, Locale.from_tag(US))
    assert isinstance(again, Reading) and again.due == got.other and again.other is None


def test_the_confirmation_says_date_time_and_zone() -> None:
    now = NOWS["london-spring"]
    due = _local("2027-03-28 09:00", LONDON)
    assert format_full(due, LONDON, now) == \
        "tomorrow, Sunday 28 March 2027 at 09:00 BST (Europe/London)"
    assert format_full(now + dt.timedelta(seconds=20), LONDON, now) == \
        "today, Saturday 27 March 2027 at 20:00:20 GMT (Europe/London)"


@pytest.mark.parametrize(
    ("tag", "order", "twelve"),
    [("en-GB", "DMY", False), ("en-US", "MDY", True), ("en", "MDY", True),
     ("en-AU", "DMY", True), ("de-DE", "DMY", False), ("de", "DMY", False),
     ("ja-JP", "YMD", False), ("en_IN", "DMY", True), ("", "MDY", True)],
)
def test_locale_conventions(tag: str, order: str, twelve: bool) -> None:
    locale = Locale.from_tag(tag)
    assert (locale.date_order, locale.twelve_hour) == (order, twelve)
