"""How a family writes dates and times, from its language tag (BCP 47, e.g. ``en-GB``,
collected by the first-boot form): numeric date order and 12- or 24-hour clock, after
CLDR's short date and time formats (https://cldr.unicode.org), for the regions that differ
from the common day-month-year and 24-hour conventions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Regions whose everyday clock is 12-hour (CLDR's "h:mm a" time format); others use 24.
_TWELVE_HOUR_REGIONS = frozenset({"US", "CA", "AU", "NZ", "IN", "PH", "PK", "BD", "EG", "SA",
                                  "MY", "CO", "MX"})
#: Regions that write numeric dates month first (CLDR short date "M/d/yy").
_MONTH_FIRST_REGIONS = frozenset({"US", "PH", "FM", "MH", "PW", "AS", "GU", "MP", "PR", "UM",
                                  "VI"})
#: Languages that write numeric dates year first (CLDR short date "y/M/d").
_YEAR_FIRST_LANGUAGES = frozenset({"zh", "ja", "ko", "hu", "lt", "mn"})


@dataclass(frozen=True)
class Locale:
    """What the family's language tag (``en-GB``; BCP 47, from the first-boot form) says
    about writing dates and times.

    Attributes:
        language: the primary language subtag, lower case (``en``).
        date_order: ``"DMY"``, ``"MDY"`` or ``"YMD"``: how ``1/2`` and ``1/2/27`` read.
        twelve_hour: True when the family's clock is 12-hour, so ``7:30`` is ambiguous.
    """

    language: str
    date_order: str
    twelve_hour: bool

    @classmethod
    def from_tag(cls, tag: str) -> Locale:
        """The conventions of ``tag``. A bare ``en`` is CLDR's ``en`` (the United States'
        conventions); an unknown region gets day-month-year and a 24-hour clock."""
        parts = re.split(r"[-_]", tag.strip()) if tag.strip() else ["en"]
        language = parts[0].lower() or "en"
        region = next((p.upper() for p in parts[1:] if len(p) == 2 and p.isalpha()), "")
        if not region and language == "en":
            region = "US"
        return cls(language, date_order(language, region), region in _TWELVE_HOUR_REGIONS)


def date_order(language: str, region: str) -> str:
    """``"DMY"``, ``"MDY"`` or ``"YMD"`` for a language and an ISO 3166 region (or "")."""
    if region in _MONTH_FIRST_REGIONS:
        return "MDY"
    if language in _YEAR_FIRST_LANGUAGES:
        return "YMD"
    return "DMY"
