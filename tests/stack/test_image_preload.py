"""The boot-time image preload (memu_agent.preload) against the host's real Docker engine, with
small images made here (``docker import`` of a one-file tree, ``docker save``d into an archive
with a lock entry): a missing image is loaded and verified, a present one only tagged, a
damaged archive refused without touching the others, and images neither OS slot needs pruned
while the other slot's stay.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from memu_agent.preload import Docker, Preload
from memu_common import container_lock as lock
from memu_dev.engine import Engine

pytestmark = pytest.mark.services

REPO = "memu/preload-test"


def _make_image(engine: Engine, directory: Path, name: str, version: str) -> lock.LockEntry:
    """A one-file image ``memu/preload-test-<name>:<version>``, saved to ``directory`` and
    described by a lock entry; then removed from Docker again."""
    ref = f"{REPO}-{name}:{version}"
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as tar:
        data = f"{name} {version}\n".encode()
        info = tarfile.TarInfo(f"etc/{name}")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    tree_path = directory / f"{name}-tree.tar"
    tree_path.write_bytes(tree.getvalue())
    engine.docker("import", tree_path, ref)
    archive = directory / f"{name}.tar"
    engine.docker("save", "-o", archive, ref)
    image_id = engine.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    engine.docker("image", "rm", ref)
    return lock.LockEntry(
        name=name, ref=ref, source="built", origin=f"test/{name}", platform="linux/amd64",
        image_id=image_id, manifest_digest=image_id, archive=archive.name,
        archive_sha256=lock.sha256_file(archive), archive_bytes=archive.stat().st_size)


def _preload(engine: Engine, directory: Path, state: Path, version: str) -> Preload:
    p = Preload(Docker(engine.host), directory, state / "booted.json", state / "status.json",
                version, state / "images.env")
    p.run()
    return p


def _ids(engine: Engine) -> dict[str, str]:
    out = engine.docker("image", "ls", "--no-trunc", "--format",
                        "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    return dict(line.split(" ") for line in out.splitlines() if line.startswith(REPO))


def test_loads_verifies_tags_refuses_and_prunes(engine: Engine, tmp_path: Path) -> None:
    v1, v2, state = tmp_path / "v1", tmp_path / "v2", tmp_path / "state"
    v1.mkdir(), v2.mkdir()
    a1, b1 = _make_image(engine, v1, "a", "1"), _make_image(engine, v1, "b", "1")
    (v1 / lock.LOCK_NAME).write_text(lock.dumps([a1, b1]))

    # First boot of version 1: both loaded, verified, recorded in the status file.
    first = _preload(engine, v1, state, "1")
    assert {k: v["state"] for k, v in first.status["images"].items()} == {
        "a": "loaded", "b": "loaded"}
    assert first.status["state"] == "done"
    assert json.loads((state / "status.json").read_text())["images"]["a"]["state"] == "loaded"
    assert _ids(engine) == {a1.ref: a1.image_id, b1.ref: b1.image_id}
    assert (state / "images.env").read_text() == (
        f"MEMU_IMAGE_A={a1.image_id}\nMEMU_IMAGE_B={b1.image_id}\n")

    # Second boot of the same version: nothing loaded again.
    again = _preload(engine, v1, state, "1")
    assert {v["state"] for v in again.status["images"].values()} == {"present"}

    # Version 2 keeps image a (same ID, new tag), changes b, and ships c damaged.
    a2 = lock.LockEntry(**{**a1.__dict__, "ref": f"{REPO}-a:2"})
    b2, c2 = _make_image(engine, v2, "b", "2"), _make_image(engine, v2, "c", "2")
    (v2 / a1.archive).write_bytes((v1 / a1.archive).read_bytes())
    damaged = bytearray((v2 / c2.archive).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (v2 / c2.archive).write_bytes(bytes(damaged))
    # d: an archive Docker itself accepts (zeros after the tar's end), but not the one the
    # lock file names.
    d2 = _make_image(engine, v2, "d", "2")
    with (v2 / d2.archive).open("ab") as f:
        f.write(bytes(10240))
    (v2 / lock.LOCK_NAME).write_text(lock.dumps([a2, b2, c2, d2]))
    update = _preload(engine, v2, state, "2")
    states = {k: v["state"] for k, v in update.status["images"].items()}
    assert states == {"a": "present", "b": "loaded", "c": "refused", "d": "refused"}
    assert update.status["state"] == "failed"
    assert "invalid diffID" in update.status["images"]["c"]["error"]
    assert "the lock file says" in update.status["images"]["d"]["error"]
    ids = _ids(engine)
    assert c2.ref not in ids and d2.ref not in ids  # nothing of a refused archive stays
    # Version 1's b is still there: the other slot (rollback) needs it.
    assert ids[b1.ref] == b1.image_id and ids[b2.ref] == b2.image_id
    assert ids[a2.ref] == a1.image_id
    assert update.status["pruned"] == []
    # The Compose project gets only the images that are in Docker.
    assert (state / "images.env").read_text() == (
        f"MEMU_IMAGE_A={a1.image_id}\nMEMU_IMAGE_B={b2.image_id}\n")

    # A third version that needs none of them: version 1's images are pruned, version 2's
    # (the other slot now) stay.
    v3 = tmp_path / "v3"
    v3.mkdir()
    a3 = _make_image(engine, v3, "a", "3")
    # e: a registry image the slot does not carry; the pull when online fetches it.
    e3 = lock.to_pull("e", "example/e:3", "example.invalid/e@sha256:" + "e" * 64,
                      "linux/amd64")
    (v3 / lock.LOCK_NAME).write_text(lock.dumps([a3, e3]))
    third = _preload(engine, v3, state, "3")
    assert third.status["state"] == "done"
    assert third.status["images"]["e"] == {"state": "to pull", "from": e3.origin}
    assert "MEMU_IMAGE_E" not in (state / "images.env").read_text()
    assert sorted(third.status["pruned"]) == sorted([b1.ref])
    ids = _ids(engine)
    assert set(ids) >= {a3.ref, a2.ref, b2.ref} and b1.ref not in ids
    for ref in ids:
        engine.docker("image", "rm", ref, check=False)
