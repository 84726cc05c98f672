"""The version comparator agrees with systemd's strverscmp_improved()."""

from __future__ import annotations

import pytest

from memu_ota.versions import compare, is_newer, newest


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.10.0", "1.9.0", 1),
        ("1.10", "1.9", 1),
        ("0.1.0", "0.1.1", -1),
        ("0.2.0", "0.2.0", 0),
        ("0.10.0", "0.9.9", 1),
        ("1.0", "1.0.1", -1),
        ("1.0~rc1", "1.0", -1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0a", "1.0", 1),
        ("1.0-1", "1.0.1", -1),
        ("1.0^p1", "1.0", 1),
        ("1.0^p1", "1.0.1", -1),
        ("007", "7", 0),
        ("a", "1", -1),
        ("2", "10", -1),
    ],
)
def test_compare(a: str, b: str, expected: int) -> None:
    assert compare(a, b) == expected
    assert compare(b, a) == -expected


def test_is_newer_and_newest() -> None:
    assert is_newer("0.2.0", "0.1.0")
    assert not is_newer("0.1.0", "0.1.0")
    assert not is_newer("0.1.0", "0.2.0")
    assert newest(["0.2.0", "1.10.0", "1.9.0", "0.1.0"]) == "1.10.0"
    assert newest([]) is None
