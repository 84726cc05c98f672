"""Saying reminder times back to the family: short (``tomorrow 08:00``, for lists), whole
(``tomorrow, Saturday 5 December 2026 at 07:00 GMT (Europe/London)``, for confirmations),
and as a phrase :mod:`memu_intelligence.timeparse` reads back exactly (for the "or did you
mean …" hint)."""

from __future__ import annotations

import datetime as dt


def format_time(when: dt.datetime, tz: dt.tzinfo, now: dt.datetime) -> str:
    """A short local rendering: ``today 08:00``, ``tomorrow 08:00`` or ``Fri 6 Jun 2025 08:00``."""
    local = when.astimezone(tz)
    days = (local.date() - now.astimezone(tz).date()).days
    clock = local.strftime("%H:%M:%S") if abs((when - now).total_seconds()) < 120 else (
        local.strftime("%H:%M"))
    if days == 0:
        return f"today {clock}"
    if days == 1:
        return f"tomorrow {clock}"
    return f"{local.strftime('%a')} {local.day} {local.strftime('%b %Y')} {clock}"


def format_full(when: dt.datetime, tz: dt.tzinfo, now: dt.datetime) -> str:
    """The whole date, time and zone: ``tomorrow, Saturday 5 December 2026 at 07:00 GMT
    (Europe/London)``; seconds when it is less than two minutes away."""
    local = when.astimezone(tz)
    days = (local.date() - now.astimezone(tz).date()).days
    near = {0: "today, ", 1: "tomorrow, "}.get(days, "")
    clock = local.strftime("%H:%M:%S" if abs((when - now).total_seconds()) < 120 else "%H:%M")
    return (f"{near}{local:%A} {local.day} {local:%B} {local.year} at {clock} "
            f"{local.tzname()} ({tz})")


def other_phrase(when: dt.datetime, tz: dt.tzinfo) -> str:
    """A phrase this module reads back as exactly ``when``: ``5 December 07:00``."""
    local = when.astimezone(tz)
    return f"{local.day} {local:%B} {local:%H:%M}"
