"""The setup form: what the family types on the first-boot page, checked field by field.

Each field is a row of :mod:`memu_common.settings` (the same table the agent's, the updater's
and the bot's settings use), with parsers whose messages are written for a parent, not an
operator: they are shown next to the field. :func:`check` turns the posted form into a
:class:`SetupRequest` or a message per field; :func:`prefill` guesses language and time zone
from the browser's ``Accept-Language`` (RFC 9110, section 12.5.4) so the page works without
JavaScript, and the page's script, where it runs, puts the browser's own time zone in.

The setup code is not a field here: the agent's auth layer checks it before the form is read.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memu_common.settings import Setting, check_fields, check_table

#: The bot's Matrix user name (``@memu:<server>``); the family cannot take it.
BOT_USERNAME = "memu"
MIN_PASSWORD = 12
MAX_PASSWORD = 128
ZONE_TABLE = Path("/usr/share/zoneinfo/zone1970.tab")
DEFAULT_TIMEZONE = "Etc/UTC"
DEFAULT_LANGUAGE = "en"
_USERNAME = re.compile(r"^[a-z0-9._-]{1,32}$")
_LANGUAGE = re.compile(r"^([a-zA-Z]{2,3})(?:[-_]([a-zA-Z]{2}))?$")


@dataclass(frozen=True)
class SetupRequest:
    """A checked setup form.

    Attributes:
        family_name: shown on the pages and as the family room's name (1-63 characters).
        admin_username: the admin's Matrix user name (the part before ``:``), lower case.
        admin_password: the admin's password (never in ``repr``, logs or pages).
        timezone: IANA time zone, e.g. ``Europe/London``.
        language: language tag, ``en`` or ``en-GB`` (the assistant's dates and times).
        tailscale_auth_key: ``tskey-…`` for remote access, or "" (never in ``repr``).
    """

    family_name: str
    admin_username: str
    admin_password: str = field(repr=False)
    timezone: str
    language: str
    tailscale_auth_key: str = field(default="", repr=False)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def family_name(value: Any) -> str:
    """1 to 63 printable characters."""
    name = _text(value)
    if not name:
        raise ValueError("Please give your family a name, e.g. The Okafors.")
    if len(name) > 63 or not name.isprintable():
        raise ValueError("Please use at most 63 letters, digits and spaces.")
    return name


def admin_username(value: Any) -> str:
    """A Matrix user name we allow: 1-32 of ``a-z 0-9 . _ -`` (lower-cased), not the bot's."""
    name = _text(value).lower()
    if not name:
        raise ValueError("Please choose a user name, e.g. ada.")
    if not _USERNAME.match(name):
        raise ValueError("Use only letters, digits, dots, dashes or underscores, no spaces "
                         "(at most 32), e.g. ada or ada.okafor.")
    if name == BOT_USERNAME:
        raise ValueError(f"{BOT_USERNAME!r} is the assistant's name; please choose another.")
    return name


def password_problem(password: str, avoid: tuple[str, ...] = ()) -> str | None:
    """Why ``password`` is too weak, in words, or None when it is strong enough.

    Long passphrases are what we ask for (NIST SP 800-63B, section 3.1.1.2: length over
    composition rules): at least :data:`MIN_PASSWORD` characters, not one character or a
    short pattern repeated, and not containing ``avoid`` (the user and family names).
    """
    if len(password) < MIN_PASSWORD:
        return (f"Please use at least {MIN_PASSWORD} characters; a few words together are "
                "easy to remember, e.g. purple-kettle-sings-loudly.")
    if len(password) > MAX_PASSWORD:
        return f"Please use at most {MAX_PASSWORD} characters."
    lower = password.lower()
    for n in range(1, 5):
        if lower == (lower[:n] * (len(lower) // n + 1))[:len(lower)]:
            return "That is a pattern repeated over and over; please use words or mixed text."
    if len(set(lower)) < 5:
        return "Please use more different characters."
    for word in avoid:
        if len(word) >= 3 and word.lower() in lower:
            return "Please do not put your user name or family name in the password."
    return None


def timezone(value: Any) -> str:
    """An IANA time zone this box knows."""
    zone = _text(value)
    try:
        zoneinfo.ZoneInfo(zone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError("Please choose your time zone from the list.") from None
    return zone


def language(value: Any) -> str:
    """A language tag ``ll`` or ``ll-CC`` (normalised: ``en_gb`` → ``en-GB``)."""
    m = _LANGUAGE.match(_text(value))
    if not m:
        raise ValueError("Please choose your language from the list.")
    lang, region = m.group(1).lower(), m.group(2)
    return f"{lang}-{region.upper()}" if region else lang


def tailscale_auth_key(value: Any) -> str:
    """Empty (no remote access), or a key as Tailscale's admin console shows it."""
    key = _text(value)
    if key and (not key.startswith("tskey-") or any(c.isspace() for c in key)):
        raise ValueError("That does not look like a Tailscale auth key: copy the whole key "
                         "from the Tailscale admin console (Settings, Keys); it starts with "
                         "tskey-. Or leave it empty and set up remote access later.")
    return key


#: One row per form field (the field's ``name`` on the page is the row's ``field``).
FIELDS: tuple[Setting, ...] = (
    Setting("family_name", family_name, required=True),
    Setting("admin_username", admin_username, required=True),
    Setting("admin_password", lambda v: v if isinstance(v, str) else "", required=True),
    Setting("timezone", timezone, required=True),
    Setting("language", language, required=True),
    Setting("tailscale_auth_key", tailscale_auth_key),
)
check_table(SetupRequest, FIELDS)
CONFIRM_FIELD = "admin_password_confirm"


def check(data: dict[str, Any]) -> tuple[SetupRequest | None, dict[str, str]]:
    """Check a posted setup form.

    Args:
        data: field name → value as posted (strings; missing fields count as empty).

    Returns:
        ``(request, {})`` when every field is good, else ``(None, {field: message})`` with
        one plain-words message per field that needs fixing (the page shows each next to
        its field). Password rules: :func:`password_problem`; the confirmation must match.
    """
    values, errors = check_fields(FIELDS, data, missing="Please fill this in.")
    password = values.get("admin_password", "")
    if "admin_password" not in errors:
        avoid = tuple(str(values.get(k, "")) for k in ("admin_username", "family_name"))
        if problem := password_problem(password, avoid):
            errors["admin_password"] = problem
        elif data.get(CONFIRM_FIELD) != password:
            errors[CONFIRM_FIELD] = "The two passwords are not the same; please type it again."
    if errors:
        return None, errors
    return SetupRequest(**values), {}


@functools.lru_cache(maxsize=4)
def _zones_by_country(table: Path) -> dict[str, str]:
    """Country code → its first (most populous region's) zone, from ``zone1970.tab``
    (tzdata: ``codes<TAB>coordinates<TAB>TZ``, comma-separated codes). Read once per path
    (tzdata changes only with the OS slot), not on every page load; callers must not
    change the returned dict."""
    zones: dict[str, str] = {}
    try:
        lines = table.read_text("utf-8").splitlines()
    except OSError:
        return zones
    for line in lines:
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            for code in parts[0].split(","):
                zones.setdefault(code, parts[2])
    return zones


def prefill(accept_language: str, table: Path = ZONE_TABLE) -> dict[str, str]:
    """The form's starting ``language`` and ``timezone`` from an ``Accept-Language`` header.

    The first tag with a ``q`` above 0 wins (``en-GB,en;q=0.8`` → ``en-GB``); its region
    picks the time zone (``GB`` → ``Europe/London``, the first zone tzdata lists for the
    country). Without a usable tag: :data:`DEFAULT_LANGUAGE` and :data:`DEFAULT_TIMEZONE`.
    """
    tags: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        if q > 0:
            tags.append((-q, i, tag.strip()))
    for _, _, tag in sorted(tags):
        try:
            lang = language(tag)
        except ValueError:
            continue
        region = lang.partition("-")[2]
        zone = _zones_by_country(table).get(region, DEFAULT_TIMEZONE) if region else (
            DEFAULT_TIMEZONE)
        return {"language": lang, "timezone": zone}
    return {"language": DEFAULT_LANGUAGE, "timezone": DEFAULT_TIMEZONE}
