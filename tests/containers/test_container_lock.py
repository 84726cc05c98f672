"""The container lock file (memu_common.container_lock): format, validation, archive checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from memu_common import MemuError, files
from memu_common import container_lock as lock

ARCHIVE = b"not really a docker-archive, but bytes with a digest"


def entry(tmp_path: Path, **over: object) -> lock.LockEntry:
    """A valid entry whose archive (written into ``tmp_path``) matches it."""
    (tmp_path / "memu-x_1.0_x86-64.tar").write_bytes(ARCHIVE)
    fields: dict[str, object] = dict(
        name="x", ref="memu/x:1.0", source="built", origin="image/x", platform="linux/amd64",
        image_id="sha256:" + "a" * 64, manifest_digest="sha256:" + "b" * 64,
        archive="memu-x_1.0_x86-64.tar",
        archive_sha256=lock.sha256_file(tmp_path / "memu-x_1.0_x86-64.tar"),
        archive_bytes=len(ARCHIVE), healthcheck=("x", "--healthcheck"))
    fields.update(over)
    return lock.LockEntry(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    built = entry(tmp_path)
    copied = dataclasses.replace(built, name="synapse", source="registry",
                                 origin="docker.io/matrixdotorg/synapse@sha256:" + "c" * 64,
                                 archive="synapse.tar", healthcheck=())
    text = lock.dumps([built, copied])
    assert json.loads(text)["schema"] == lock.SCHEMA
    assert lock.loads(text) == [built, copied]
    (tmp_path / lock.LOCK_NAME).write_text(text)
    assert lock.read(tmp_path) == [built, copied]


def test_sha256_file_is_prefixed_hex_of_the_bytes(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert lock.sha256_file(tmp_path / "f") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


@pytest.mark.parametrize("over", [
    {"image_id": "sha256:short"},
    {"manifest_digest": "md5:" + "b" * 32},
    {"archive_sha256": "A" * 64},
    {"source": "somewhere"},
    {"archive": "../escape.tar"},
    {"archive": ""},
])
def test_malformed_entries_are_refused(tmp_path: Path, over: dict[str, object]) -> None:
    with pytest.raises(MemuError):
        entry(tmp_path, **over)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    e = entry(tmp_path)
    with pytest.raises(MemuError, match="duplicate name"):
        lock.dumps([e, dataclasses.replace(e, archive="other.tar")])


@pytest.mark.parametrize("text", [
    "{",
    json.dumps({"schema": 2, "images": []}),
    json.dumps({"schema": 1, "images": [{"name": "x"}]}),
    json.dumps({"schema": 1, "images": ["x"]}),
])
def test_malformed_files_are_refused(text: str) -> None:
    with pytest.raises(MemuError, match="container lock"):
        lock.loads(text)


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    data = json.loads(lock.dumps([entry(tmp_path)]))
    data["images"][0]["surprise"] = 1
    with pytest.raises(MemuError, match="bad entry"):
        lock.loads(json.dumps(data))


def test_missing_lock_file_says_where(tmp_path: Path) -> None:
    with pytest.raises(MemuError, match=str(tmp_path)):
        lock.read(tmp_path)


def test_verify_accepts_the_recorded_archive(tmp_path: Path) -> None:
    e = entry(tmp_path)
    assert lock.verify(tmp_path, e) == tmp_path / e.archive


def test_verify_finds_a_changed_archive(tmp_path: Path) -> None:
    e = entry(tmp_path)
    (tmp_path / e.archive).write_bytes(ARCHIVE.upper())  # same size, other bytes
    with pytest.raises(MemuError, match="digest"):
        lock.verify(tmp_path, e)
    (tmp_path / e.archive).write_bytes(ARCHIVE[:-1])
    with pytest.raises(MemuError, match="bytes"):
        lock.verify(tmp_path, e)
    (tmp_path / e.archive).unlink()
    with pytest.raises(MemuError, match="missing"):
        lock.verify(tmp_path, e)


def test_a_registry_image_pulled_on_the_device_has_no_archive_fields(tmp_path: Path) -> None:
    pinned = "ghcr.io/example/app@sha256:" + "c" * 64
    pulled = entry(tmp_path, source="registry", origin=pinned, image_id="",
                   manifest_digest="sha256:" + "c" * 64, archive="", archive_sha256="",
                   archive_bytes=0)
    assert not pulled.in_slot and entry(tmp_path).in_slot
    assert lock.to_pull("x", "memu/x:1.0", pinned, "linux/amd64",
                        ("x", "--healthcheck")) == pulled
    with pytest.raises(MemuError, match="pulled on the device"):
        lock.to_pull("x", "memu/x:1.0", "ghcr.io/example/app:latest", "linux/amd64")
    assert lock.loads(lock.dumps([pulled])) == [pulled]
    with pytest.raises(MemuError, match="pulled on the device"):
        entry(tmp_path, source="registry", origin=pinned, archive="", archive_sha256="",
              archive_bytes=0)  # an image ID it cannot know
    with pytest.raises(MemuError):  # a built image is always in the slot
        entry(tmp_path, image_id="", archive="", archive_sha256="", archive_bytes=0)


def test_a_file_longer_than_one_read_is_hashed_whole(tmp_path: Path) -> None:
    data = bytes(range(256)) * (10 << 10) + b"tail"  # 2.5 MiB and 4 bytes: three reads
    (tmp_path / "f").write_bytes(data)
    assert lock.sha256_file(tmp_path / "f") == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (1 << 20) + 5, 3 << 20])
def test_a_files_first_bytes_are_hashed_to_the_length_asked(tmp_path: Path, size: int) -> None:
    """memu_common.files.sha256_file with a length: what a release keeps of a partition."""
    data = bytes(range(256)) * (10 << 10) + b"tail"  # 2.5 MiB and 4 bytes
    (tmp_path / "f").write_bytes(data)
    assert files.sha256_file(tmp_path / "f", size) == hashlib.sha256(data[:size]).hexdigest()
