"""Reading Docker's human-readable sizes for `just bench-stack`."""

from __future__ import annotations

import pytest

from memu_dev.bench_stack import parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("48.3MiB", 48.3 * 2**20), ("1.2GiB", 1.2 * 2**30), ("512KiB", 512 * 1024),
    ("0B", 0), ("5kB", 5000), (" 3MB ", 3e6),
])
def test_docker_sizes(text: str, expected: float) -> None:
    assert parse_size(text) == pytest.approx(expected)


def test_not_a_size() -> None:
    with pytest.raises(ValueError, match="not a Docker size"):
        parse_size("lots")
