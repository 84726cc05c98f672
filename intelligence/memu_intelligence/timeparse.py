"""Reading reminder times the way people mean them: ``at 7``, ``tomorrow at 8``,
``half past 5 pm``, ``24/12 18:30``, ``in 20 minutes``.

English phrases are read by the small grammar below, because the rules are the product's
own and dateparser's guesses broke them (a bare ``at 7`` became a day of a month at
midnight, ``tomorrow at 8`` kept the current clock time, ``the 31st of February`` became
another date):

- A stated hour and minute are always kept. A bare hour (``at 7``, ``7 o'clock``, and
  ``7:30`` where the family's clock is 12-hour) means the next 7 o'clock, whichever of
  07:00 and 19:00 comes first; the reading says so (:attr:`Reading.other`), so the reply
  can offer the other one. 24-hour forms (``19:00``, ``07:30`` with its leading zero,
  ``7:30`` where the clock is 24-hour), ``am``/``pm`` and ``morning``/``evening`` are exact.
- A date without a time means 09:00 (:data:`DEFAULT_HOUR`); the reading says so.
- Numeric dates follow the family's locale (``24/12`` in en-GB, ``12/24`` in en-US;
  ISO ``2026-12-24`` always): :func:`date_order`.
- An impossible date or time (``the 31st of February``, ``25:00``, ``13pm``, a time the
  clocks skip when they go forward) is never guessed: it becomes a :class:`Question`.

Phrases in other languages go to dateparser (https://dateparser.readthedocs.io) with the
family's date order; dateparser is CPU-bound and slow on its first call, so async callers
run :func:`parse_reminder` in a worker thread and the bot calls :func:`warm_up` at start.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import dateparser

from memu_intelligence.conventions import Locale
from memu_intelligence.errors import UserFacingError
from memu_intelligence.timefmt import format_time

MAX_TIME_WORDS = 9  # the longest time phrase we try ("next friday at quarter past 5 in the…")
DEFAULT_HOUR = 9  # a date without a time ("on friday") means 09:00, not midnight
#: The furthest ahead a reminder may be.
MAX_AHEAD = dt.timedelta(days=3653)
_TOO_FAR = "That's too far ahead for me: I keep reminders for up to ten years."
#: Hours a day-part word alone stands for ("tomorrow morning", "tonight").
PART_HOURS = {"morning": 9, "afternoon": 15, "evening": 18, "night": 20}
_LEAD = re.compile(r"^(?:me|us)\s+", re.IGNORECASE)
_JOIN = re.compile(r"^(?:to|that|about|:|-)\s+", re.IGNORECASE)
#: A time phrase at the end of the text starts with one of these ("call mum at 7").
_TAIL_START = re.compile(r"^(?:at|on|in|by|tomorrow|today|tonight|this|next|@)\b",
                         re.IGNORECASE)

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBER_WORDS = {w: i for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
     "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
     "eighteen", "nineteen", "twenty"])}
_NUMBER_WORDS |= {"a": 1, "an": 1, "twenty-five": 25, "thirty": 30, "forty-five": 45}


@dataclass(frozen=True)
class Reading:
    """A time phrase read.

    Attributes:
        due: when, timezone-aware in the family's zone.
        other: for a bare hour, the other reading (07:00 when ``due`` is 19:00), else None.
        assumed: words for what was filled in (``"no time given, so 09:00"``), or "".
    """

    due: dt.datetime
    other: dt.datetime | None = None
    assumed: str = ""


@dataclass(frozen=True)
class Question:
    """A phrase that cannot be read without guessing: ``ask`` is the question back."""

    ask: str


@dataclass(frozen=True)
class Parsed:
    """A reminder request: when, and what (``text``)."""

    when: Reading
    text: str

    @property
    def due(self) -> dt.datetime:
        """When the reminder is due (aware)."""
        return self.when.due


@dataclass(frozen=True)
class Unclear:
    """A reminder request whose time needs an answer: ``text`` (may be "") waits for it."""

    question: Question
    text: str


# --- the English grammar --------------------------------------------------------------------

_NUM = r"(?:\d{1,2}|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + ")"
#: An hour: digits or a number word up to twelve (not "a", "an").
_HOUR = r"(?:\d{1,2}|" + "|".join(w for w, n in _NUMBER_WORDS.items()
                                  if 1 <= n <= 12 and w not in ("a", "an")) + ")"
_WEEKDAY = (r"(mon(?:day)?|tue(?:s|sday)?|wed(?:nesday)?|thu(?:r|rs|rsday)?|fri(?:day)?"
            r"|sat(?:urday)?|sun(?:day)?)")
_MONTH = (r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t|tember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_AMPM = r"(?P<ap>am|pm)"
_PART = r"(?:in the (?P<part>morning|afternoon|evening)|at (?P<part2>night))"
_TIME_FORMS = [
    # noon / midnight
    r"(?:at )?(?P<named>noon|midday|midnight)",
    # half past 5, quarter to 6, 20 past 4, ten to 7 (am/pm or a day part may follow)
    rf"(?:at )?(?P<amount>half|quarter|a quarter|{_NUM})(?: minutes?)? "
    rf"(?P<rel>past|after|to|before) (?P<h>{_HOUR})(?: ?{_AMPM})?(?: {_PART})?",
    # 7:30, 19:30, 7.30pm, 25:00 (said impossible below)
    r"(?:at |@ ?)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?: ?" + _AMPM + rf")?(?: {_PART})?",
    r"(?:at |@ ?)?(?P<h>\d{1,2})\.(?P<m>\d{2}) ?" + _AMPM + rf"(?: {_PART})?",
    r"at (?P<h>\d{1,2})\.(?P<m>\d{2})" + rf"(?: {_PART})?",
    # 7pm, 7 pm, 7 o'clock, at 7, at seven (in the evening)
    rf"(?:at |@ ?)?(?P<h>{_HOUR}) ?{_AMPM}(?: {_PART})?",
    rf"(?:at )?(?P<h>{_HOUR}) o'?clock(?: ?{_AMPM})?(?: {_PART})?",
    rf"(?:at |@ ?)(?P<h>{_HOUR})(?: {_PART})?",
]
#: The forms as whole words: "at 10:00" inside "sat 10:00" is not one.
_TIME_PATTERNS = [re.compile(rf"(?:^|(?<= ))(?:{form})(?= |$)") for form in _TIME_FORMS]
_RELATIVE_UNIT = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
                  "h": 3600, "hr": 3600, "hour": 3600, "d": 86400, "day": 86400,
                  "w": 604800, "wk": 604800, "week": 604800}
_AMOUNT = re.compile(rf"(?P<n>\d+(?:\.\d+)?|{_NUM}) ?"
                     r"(?P<unit>secs?|seconds?|mins?|minutes?|hrs?|hours?|days?|wks?|weeks?"
                     r"|[smhdw])\b")


@dataclass(frozen=True)
class _Clock:
    """A time of day as said: hour 0-23 when exact, 1-12 with ``bare`` when ambiguous."""

    hour: int
    minute: int
    bare: bool
    said: str


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS[word]


def _normal(phrase: str) -> str:
    # A phone's apostrophe (U+2019) in "o'clock"; "a.m." as "am".
    s = phrase.lower().replace("\u2019", "'").replace("a.m.", "am").replace("p.m.", "pm")
    s = re.sub(r"\s+", " ", s).strip(" ,!?")
    return s.removesuffix(".") if not re.search(r"\d\.\d{1,2}\.$", s) else s


def _clock(m: re.Match[str], locale: Locale) -> _Clock | Question:
    """The clock time a time pattern matched, or the question an impossible one needs."""
    said = m.group(0).removeprefix("at ").removeprefix("@").strip()
    g = m.groupdict()
    if g.get("named"):
        return _Clock(0 if g["named"] == "midnight" else 12, 0, False, said)
    part = g.get("part") or g.get("part2")
    ap = g.get("ap")
    if g.get("amount"):
        amount = g["amount"].removeprefix("a ")
        minutes = {"half": 30, "quarter": 15}.get(amount) or _number(amount)
        hour = _number(g["h"])
        if not 1 <= hour <= 12 or not 1 <= minutes <= 59:
            return Question(f"“{said}” isn't a time of day. What time did you mean?")
        if g["rel"] in ("to", "before"):
            hour, minute = (hour - 1) % 12 or 12, 60 - minutes
        else:
            minute = minutes
    else:
        hour, minute = _number(g["h"]), int(g.get("m") or 0)
    if hour > 23 or minute > 59 or (ap and not 1 <= hour <= 12) or (part and hour > 12):
        return Question(f"“{said}” isn't a time of day. What time did you mean, e.g. "
                        f"“7:30pm” or “19:30”?")
    if ap or part:
        pm = ap == "pm" or part in ("afternoon", "evening", "night")
        if part == "night" and hour < 5:
            pm = False  # "2 at night" is 02:00
        return _Clock(hour % 12 + (12 if pm else 0), minute, False, said)
    written_24h = hour == 0 or hour > 12 or (g.get("m") is not None and (
        g["h"].startswith("0") or not locale.twelve_hour))
    return _Clock(hour, minute, not written_24h, said)


def _find_clock(s: str, locale: Locale) -> tuple[_Clock | Question, str] | None:
    """The time of day in ``s`` and the rest of ``s`` around it, or None when there is none."""
    for pattern in _TIME_PATTERNS:
        m = pattern.search(s)
        if m:
            before, after = s[: m.start()], s[m.end():]
            return _clock(m, locale), f"{before.strip()} {after.strip()}".strip()
    return None


@dataclass(frozen=True)
class _Day:
    """A date as said: ``date`` itself, or a weekday to find from today."""

    date: dt.date | None = None
    weekday: int | None = None
    strictly_after_today: bool = False
    part: str = ""  # "morning" … "night" when the date words carried one ("tonight")


def _year_for(month: int, day: int, today: dt.date, year: int | None) -> dt.date | Question:
    """The date of ``day``/``month`` in ``year``, or its next occurrence from ``today``."""
    name = f"{day} {_MONTHS[month - 1].title()}"
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        return Question(f"I can't find a date “{day}/{month}”. Which date did you mean?")
    if year is not None and year > today.year + MAX_AHEAD.days // 365:
        return Question(_TOO_FAR)
    if year is not None:
        try:
            return dt.date(year, month, day)
        except ValueError:
            return Question(f"There is no {name} in {year}. Which date did you mean?")
    for y in range(today.year, today.year + 9):
        try:
            found = dt.date(y, month, day)
        except ValueError:
            continue
        if found >= today:
            return found
    return Question(f"There is no {name}. Which date did you mean?")


def _day(s: str, today: dt.date, locale: Locale) -> _Day | Question | None:
    """The date words ``s`` (without a time of day), or None when they are not a date."""
    s = re.sub(r"^(?:on|for) ", "", s.strip(" ,"))
    s = re.sub(r"\b(?:of|the)\b ?", "", s).strip(" ,")
    if s in ("", "today"):
        return _Day(today)
    parts = {"this morning": "morning", "this afternoon": "afternoon",
             "this evening": "evening", "tonight": "night", "today at night": "night"}
    if s in parts:
        return _Day(today, part=parts[s])
    m = re.fullmatch(r"(tomorrow|tmrw|tmr|day after tomorrow)(?: (morning|afternoon|evening|"
                     r"night))?", s)
    if m:
        return _Day(today + dt.timedelta(days=2 if m[1].startswith("day") else 1),
                    part=m[2] or "")
    if s == "yesterday":
        return _Day(today - dt.timedelta(days=1))
    m = re.fullmatch(r"in (\d+|" + _NUM + r") (days?|weeks?)", s)
    if m:
        n = _number(m[1]) if len(m[1]) <= 5 else MAX_AHEAD.days + 1
        if n * (7 if m[2].startswith("week") else 1) > MAX_AHEAD.days:
            return Question(_TOO_FAR)
        return _Day(today + dt.timedelta(days=n * (7 if m[2].startswith("week") else 1)))
    m = re.fullmatch(r"(this |next |coming )?" + _WEEKDAY + r"(?: (morning|afternoon|evening|"
                     r"night))?", s)
    if m:
        return _Day(weekday=[w[:3] for w in _WEEKDAYS].index(m[2][:3]),
                    strictly_after_today=m[1] == "next ", part=m[3] or "")
    month = _MONTH
    ordinal = r"(\d{1,2})(?:st|nd|rd|th)?"
    year = r"(?:,? (\d{4}))?"
    weekday_prefix = r"(?:" + _WEEKDAY + r",? )?"
    m = re.fullmatch(weekday_prefix + ordinal + " " + month + year, s)
    if m:
        return _dated(_MONTHS.index(_month(m[3])) + 1, int(m[2]), m[4], today)
    m = re.fullmatch(weekday_prefix + month + " " + ordinal + year, s)
    if m:
        return _dated(_MONTHS.index(_month(m[2])) + 1, int(m[3]), m[4], today)
    m = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)", s)
    if m:  # "the 3rd": the next 3rd of a month
        day = int(m[1])
        for ahead in range(0, 13):
            y, mo = divmod(today.month - 1 + ahead, 12)
            try:
                found = dt.date(today.year + y, mo + 1, day)
            except ValueError:
                continue
            if found >= today:
                return _Day(found)
        return Question(f"No month has a {m[0]}. Which date did you mean?")
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", s)
    if m:
        return _dated(int(m[2]), int(m[3]), m[1], today)
    m = re.fullmatch(r"(\d{1,4})([/.])(\d{1,2})(?:\2(\d{2}|\d{4}))?\.?", s)
    if m and (m[4] or m[2] == "/" or s.endswith(".")):
        a, b, c = m[1], m[3], m[4]
        if locale.date_order == "YMD" and c:
            year_s, month_s, day_s = a, b, c
        elif locale.date_order == "MDY":
            month_s, day_s, year_s = a, b, c
        else:
            day_s, month_s, year_s = a, b, c
        if year_s is not None and len(year_s) == 2:
            year_s = str(2000 + int(year_s))
        if not 1 <= int(month_s) <= 12:
            order = {"DMY": "day/month", "MDY": "month/day", "YMD": "year/month/day"}
            return Question(f"“{s}” isn't a date in {order[locale.date_order]} order. "
                            f"Which date did you mean? You can also write it as "
                            f"“24 December”.")
        return _dated(int(month_s), int(day_s), year_s, today)
    return None


def _month(word: str) -> str:
    return next(mo for mo in _MONTHS if mo.startswith(word.rstrip(".")[:3]))


def _dated(month: int, day: int, year: str | None, today: dt.date) -> _Day | Question:
    found = _year_for(month, day, today, int(year) if year else None)
    return found if isinstance(found, Question) else _Day(found)


def _relative(s: str, now: dt.datetime) -> dt.datetime | None:
    """``in 20 minutes``, ``in an hour and a half``, ``in 1h30`` from ``now``; else None."""
    m = re.fullmatch(r"in (.+)", s)
    if not m:
        return None
    rest = re.sub(r"^(\d+)h(\d{1,2})$", r"\1h \2m", m[1])
    rest = re.sub(r"\bhalf an?\b", "0.5", rest)
    rest = re.sub(rf"\b({_NUM}) ([a-z]+) and a half\b",
                  lambda h: f"{_number(h[1]) + 0.5} {h[2]}", rest)
    seconds = 0.0
    for part in re.split(r" ?(?:,|\band\b) ?| (?=\d|" + _NUM + r" )", rest):
        a = _AMOUNT.fullmatch(part.strip())
        if not a:
            return None
        n = a["n"]
        count = float(n) if n[0].isdigit() else float(_number(n))
        unit = a["unit"].rstrip("s") if len(a["unit"]) > 1 else a["unit"]
        seconds += count * _RELATIVE_UNIT[unit]
        if seconds > MAX_AHEAD.total_seconds():
            return dt.datetime.max.replace(tzinfo=dt.UTC)  # said too far ahead below
    # In UTC: aware arithmetic in one zone is wall-clock arithmetic, and "in 4 hours" across
    # a DST change is four hours of real time.
    return (now.astimezone(dt.UTC) + dt.timedelta(seconds=seconds)) if seconds else None


def _local(day: dt.date, hour: int, minute: int, tz: dt.tzinfo) -> dt.datetime | None:
    """``day`` at ``hour:minute`` in ``tz``; None when the clocks skip that time (DST). At a
    time the clocks pass twice (when they go back), the first."""
    naive = dt.datetime.combine(day, dt.time(hour, minute))
    aware = naive.replace(tzinfo=tz, fold=0)
    if aware.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None) != naive:
        return None
    return aware


def read_english(phrase: str, tz: dt.tzinfo, now: dt.datetime,
                 locale: Locale) -> Reading | Question | None:
    """Read an English time phrase by the rules of this module's docstring.

    Args:
        phrase: the whole phrase (``"tomorrow at half past 5 pm"``).
        tz: the family's zone; ``now``: the present moment (aware).

    Returns:
        the reading; a Question when reading it would be a guess; None when ``phrase`` is
        not (wholly) a time phrase.
    """
    s = _normal(phrase)
    if not s or s.isdigit():
        return None
    relative = _relative(s, now)
    if relative is not None:
        return Reading(relative.astimezone(tz)) if relative.year < dt.MAXYEAR else Question(
            _TOO_FAR)
    found = _find_clock(s, locale)
    clock, rest = found if found else (None, s)
    today = now.astimezone(tz).date()
    day = _day(rest, today, locale)
    if day is None:
        return None  # words that are not a day: not a time phrase, whatever the clock says
    if isinstance(clock, Question):
        return clock
    if isinstance(day, Question):
        return day
    if clock is None:
        if not day.part and day.date == today:
            return Question("What time today? e.g. “5pm” or “17:00”.")
        hour = PART_HOURS.get(day.part, DEFAULT_HOUR)
        clock = _Clock(hour, 0, False, "")
        assumed = "" if day.part else f"no time given, so {hour:02d}:00"
    else:
        assumed = ""
        if clock.bare and day.part:
            pm = day.part != "morning" and not (day.part == "night" and clock.hour < 5)
            clock = _Clock(clock.hour % 12 + (12 if pm else 0), clock.minute, False, clock.said)
    if day.date is not None:
        dates = [day.date] if rest else [today, today + dt.timedelta(days=1)]
    else:
        dates = [today + dt.timedelta(days=d) for d in range(0, 15)
                 if (today + dt.timedelta(days=d)).weekday() == day.weekday
                 and (d > 0 or not day.strictly_after_today)]
    hours = [clock.hour % 12, clock.hour % 12 + 12] if clock.bare else [clock.hour]
    return _choose(dates, hours, clock, tz, now, assumed)


def _choose(dates: list[dt.date], hours: list[int], clock: _Clock, tz: dt.tzinfo,
            now: dt.datetime, assumed: str) -> Reading | Question:
    """The first of the ``dates`` and ``hours`` (at ``clock``'s minute) still ahead of ``now``;
    on one date that has passed, its last (the caller says it is in the past)."""
    local_now = now.astimezone(tz).replace(tzinfo=None)
    ahead: list[dt.datetime] = []
    passed: list[dt.datetime] = []
    for d in dates:
        for h in hours:
            t = _local(d, h, clock.minute, tz)
            if t is None:
                skipped = dt.datetime.combine(d, dt.time(h, clock.minute))
                if not clock.bare and skipped > local_now and not ahead:
                    said = clock.said or f"{h:02d}:{clock.minute:02d}"
                    return Question(
                        f"{said} doesn't exist on {d:%A} {d.day} {d:%B} {d.year} in {tz}: the "
                        f"clocks go forward then. Which time did you mean?")
                continue
            (ahead if t > now else passed).append(t)
    if not ahead:
        return Reading(max(passed), assumed=assumed)
    due = min(ahead)
    other = None
    if clock.bare:
        other = min((t for t in ahead if t.hour != due.hour), default=None)
    return Reading(due, other, assumed)


#: A clock time stated in any language: "8 Uhr", "8h30", "um 8", "à 20h", "a las 8", "18:00".
_STATED_CLOCK = re.compile(
    r"(?:\b(?:um|à|a las|alle|om|kl\.?|klockan|o)\s+(\d{1,2})(?:[:.h](\d{2}))?\b)"
    r"|(?:\b(\d{1,2})(?:[:.h](\d{2}))?\s*(?:uhr|h|uur)\b)"
    r"|(?:\b(\d{1,2}):(\d{2})\b)", re.IGNORECASE)


def read_other_language(phrase: str, tz: dt.tzinfo, now: dt.datetime,
                        locale: Locale) -> Reading | Question | None:
    """A phrase in another language, read by dateparser in the family's date order, and
    checked: a stated hour dateparser lost (it reads "morgen um 8 Uhr" as tomorrow at the
    current clock time) or a far-off year becomes a Question, never a silent guess; a date
    without a time means :data:`DEFAULT_HOUR`.
    """
    if phrase.strip().isdigit():
        return None
    local_now = now.astimezone(tz).replace(tzinfo=None)
    when: dt.datetime | None = dateparser.parse(
        phrase,
        settings={
            "TIMEZONE": str(tz),
            "TO_TIMEZONE": str(tz),
            "RETURN_AS_TIMEZONE_AWARE": True,
            "PREFER_DATES_FROM": "future",
            "DATE_ORDER": locale.date_order,
            "RELATIVE_BASE": local_now,
        },
    )
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    unsure = Question(f"I couldn't read “{phrase}” for sure. Please write the date and time "
                      f"in numbers, e.g. “24.12. 18:00”.")
    stated = _STATED_CLOCK.search(phrase)
    if stated:
        hour_s, minute_s = next((g, stated.groups()[i + 1]) for i, g in
                                enumerate(stated.groups()) if i % 2 == 0 and g is not None)
        hour, minute = int(hour_s), int(minute_s or 0)
        if when.hour % 12 != hour % 12 or when.minute != minute:
            return unsure
    if when.year > local_now.year + 1:
        return unsure
    if not stated and when.replace(tzinfo=None).time().replace(second=0, microsecond=0) in (
            dt.time(0), local_now.time().replace(second=0, microsecond=0)) and not re.search(
            r"\d", phrase):
        return Reading(when.replace(hour=DEFAULT_HOUR, minute=0, second=0, microsecond=0),
                       assumed=f"no time given, so {DEFAULT_HOUR:02d}:00")
    return Reading(when)


def read_when(phrase: str, tz: dt.tzinfo, now: dt.datetime,
              locale: Locale) -> Reading | Question | None:
    """One whole phrase as a time (an answer to a :class:`Question` too), or None."""
    english = read_english(phrase, tz, now, locale)
    if english is not None or locale.language == "en":
        return english
    return read_other_language(phrase, tz, now, locale)


def parse_reminder(args: str, tz: dt.tzinfo, now: dt.datetime,
                   locale: Locale | None = None) -> Parsed | Unclear:
    """Split ``tomorrow 8am put the bins out`` (or ``call mum at 7``) into when and what.

    The time phrase is the longest leading run of words (up to ``MAX_TIME_WORDS``) that
    reads as one; failing that, the longest trailing run that starts with ``at``, ``on``,
    ``in``, ``tomorrow``…; ``me``/``us`` before it and ``to``/``that`` after it are dropped.

    Returns:
        Parsed; or Unclear when the time would have to be guessed (its question, and the
        text that waits for the answer).

    Raises:
        UserFacingError: no time found, no text left, or the time is in the past.
    """
    locale = locale or Locale.from_tag("en")
    words = _LEAD.sub("", args.strip()).split()
    found: tuple[Reading | Question, str] | None = None
    for n in range(min(len(words), MAX_TIME_WORDS), 0, -1):
        when = read_when(" ".join(words[:n]), tz, now, locale)
        if when is not None:
            found = when, _JOIN.sub("", " ".join(words[n:])).strip()
            break
    if found is None:
        for n in range(min(len(words) - 1, MAX_TIME_WORDS), 0, -1):
            tail = " ".join(words[-n:])
            if _TAIL_START.match(tail):
                when = read_when(tail, tz, now, locale)
                if when is not None:
                    found = when, _JOIN.sub("", " ".join(words[:-n])).strip(" ,")
                    break
    if found is None:
        raise UserFacingError(
            "I couldn't tell when. Start with the time, e.g. "
            "“/remind tomorrow 8am put the bins out” or “/remind in 20 minutes check the oven”."
        )
    when, text = found
    if isinstance(when, Question):
        return Unclear(when, text)
    if not text:
        raise UserFacingError("What should I remind you about? Add the text after the time.")
    check_future(when, tz, now)
    return Parsed(when, text)


def check_future(when: Reading, tz: dt.tzinfo, now: dt.datetime) -> None:
    """Raises UserFacingError when ``when`` is in the past (30 s of grace)."""
    if when.due < now - dt.timedelta(seconds=30):
        raise UserFacingError(
            f"{format_time(when.due, tz, now)} is in the past; give me a time in the future."
        )


def warm_up() -> None:
    """Load dateparser's data now (its first call takes seconds), not at a first reminder."""
    dateparser.parse("tomorrow 8am")
