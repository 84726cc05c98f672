"""The comparison of two builds (memu_dev.reproducible) on files made here; the UKI's
sections of a real build: tests/qemu/test_build_artifacts.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from memu_common import MemuError
from memu_dev.reproducible import differing, digests, keep, release_artifacts, role

STEM = "memu-os_0.1.0_x86-64"
UUID_A, UUID_B = "9fb08bd57109e3a71d4ec985ddc209e0", "1a455c4504221a0981cc8766cede9969"


def _build(out: Path, usr: bytes, uuid: str) -> dict[str, Path]:
    out.mkdir()
    for name, data in ((f"{STEM}.efi", b"uki"), (f"{STEM}.usr.{uuid}.raw", usr),
                       (f"{STEM}.usr-verity.{uuid}.raw", b"verity"),
                       (f"{STEM}.usr-verity-sig.{uuid}.raw", b"sig"),
                       (f"{STEM}.raw", b"the whole disk"), (f"{STEM}.SHA256SUMS", b"sums")):
        (out / name).write_bytes(data)
    return release_artifacts(out, STEM)


def test_artifacts_are_named_by_role_without_their_partition_uuid(tmp_path: Path) -> None:
    assert role(f"{STEM}.usr.{UUID_A}.raw") == f"{STEM}.usr.raw"
    assert role(f"{STEM}.efi") == f"{STEM}.efi"
    found = _build(tmp_path / "out", b"usr", UUID_A)
    assert sorted(found) == [f"{STEM}.efi", f"{STEM}.usr-verity-sig.raw",
                             f"{STEM}.usr-verity.raw", f"{STEM}.usr.raw"]


def test_a_missing_artifact_is_named(tmp_path: Path) -> None:
    _build(tmp_path / "out", b"usr", UUID_A)
    (tmp_path / "out" / f"{STEM}.efi").unlink()
    with pytest.raises(MemuError, match=rf"{STEM}\.efi"):
        release_artifacts(tmp_path / "out", STEM)


def test_only_what_differs_is_named_whatever_the_uuid_in_the_name(tmp_path: Path) -> None:
    first = digests(keep(_build(tmp_path / "a", b"usr", UUID_A), tmp_path / "kept-a"))
    same = digests(_build(tmp_path / "b", b"usr", UUID_B))
    assert differing(first, same) == []
    other = digests(_build(tmp_path / "c", b"usr, one byte more", UUID_A))
    assert differing(first, other) == [f"{STEM}.usr.raw"]
    del other[f"{STEM}.efi"]
    assert differing(first, other) == [f"{STEM}.efi", f"{STEM}.usr.raw"]
