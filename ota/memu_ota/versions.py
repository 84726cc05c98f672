"""Version comparison the way systemd does it, so the agent and sysupdate agree on "newer".

This is systemd's ``strverscmp_improved()`` (src/fundamental/string-util-fundamental.c),
which implements the UAPI Group's "Version Format Specification"
(https://uapi-group.org/specifications/specs/version_format_specification/):

* only ASCII letters, digits and ``~ - ^ .`` count; other characters are skipped;
* ``~`` sorts before everything, even the end of the string (``1.0~rc1 < 1.0``);
* otherwise, when one string ends, the longer one is newer (``1.0 < 1.0.1``);
* ``-`` (release separator), then ``^`` (patched), then ``.`` sort before anything else
  at the same place;
* digit runs compare as numbers (leading zeros ignored: ``1.10 > 1.9``, ``007 == 7``), and
  a number is newer than letters; letter runs compare as strings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable


def _valid(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "~-^.")


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def compare(a: str, b: str) -> int:
    """Compare two versions: -1 when ``a`` is older than ``b``, 0 when equal, 1 when newer."""
    if not a or not b:
        return _sign((a > b) - (a < b))
    i = j = 0
    while True:
        while i < len(a) and not _valid(a[i]):
            i += 1
        while j < len(b) and not _valid(b[j]):
            j += 1
        ca, cb = a[i : i + 1], b[j : j + 1]  # "" at the end
        if ca == "~" or cb == "~":
            if (ca != "~") != (cb != "~"):
                return 1 if ca != "~" else -1
            i, j = i + 1, j + 1
            ca, cb = a[i : i + 1], b[j : j + 1]
        if not ca or not cb:
            return _sign((ca > cb) - (ca < cb))
        for sep in "-^.":
            if ca == sep or cb == sep:
                if (ca != sep) != (cb != sep):
                    return 1 if ca != sep else -1
                i, j = i + 1, j + 1
                ca, cb = a[i : i + 1], b[j : j + 1]
        if ca.isdigit() or cb.isdigit():
            ea, eb = _run(a, i, str.isdigit), _run(b, j, str.isdigit)
            if (ea > i) != (eb > j):
                return 1 if ea > i else -1
            na, nb = a[i:ea].lstrip("0"), b[j:eb].lstrip("0")
            if len(na) != len(nb):
                return 1 if len(na) > len(nb) else -1
            if na != nb:
                return 1 if na > nb else -1
        else:
            ea, eb = _run(a, i, str.isalpha), _run(b, j, str.isalpha)
            sa, sb = a[i:ea], b[j:eb]
            n = min(len(sa), len(sb))
            if sa[:n] != sb[:n]:
                return 1 if sa[:n] > sb[:n] else -1
            if len(sa) != len(sb):
                return 1 if len(sa) > len(sb) else -1
        i, j = ea, eb


def _run(s: str, start: int, pred: Callable[[str], bool]) -> int:
    """End index of the run of ASCII characters from ``start`` for which ``pred`` holds."""
    end = start
    while end < len(s) and s[end].isascii() and pred(s[end]):
        end += 1
    return end


def is_newer(candidate: str, running: str) -> bool:
    """True when ``candidate`` is strictly newer than ``running``."""
    return compare(candidate, running) > 0


def newest(versions: Iterable[str]) -> str | None:
    """The newest of ``versions`` (None for none)."""
    ordered = sorted(versions, key=functools.cmp_to_key(compare))
    return ordered[-1] if ordered else None
