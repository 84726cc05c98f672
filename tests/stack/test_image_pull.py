"""The device's pull of registry images by digest (memu_agent.pull) against the host's real
Docker engine and a real registry on loopback holding a stand-in (an image with one 8 MB
layer of random bytes, made here and removed from Docker before the pull): the pinned digest
is pulled with progress and its image ID written for Compose; a digest the registry does not
have is refused by name while the other image still comes; an image Docker has already is
not pulled again.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from memu_agent.preload import Docker, Preload
from memu_agent.pull import DockerApi, Pull
from memu_common import container_lock as lock
from memu_dev.engine import Engine
from memu_dev.registry import Registry

pytestmark = pytest.mark.services


def _pulled(name: str, origin: str) -> lock.LockEntry:
    return lock.to_pull(name, f"{origin.split('@')[0]}:v1", origin, "linux/amd64")


def _stand_in(engine: Engine, tmp_path: Path) -> tuple[Path, str]:
    """A docker-archive of a new one-layer image and its image ID; Docker keeps none of it."""
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as tar:
        data = os.urandom(8 << 20)
        info = tarfile.TarInfo("photos.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "tree.tar").write_bytes(tree.getvalue())
    engine.docker("import", tmp_path / "tree.tar", "memu/pull-stand-in:1")
    image_id = engine.docker("image", "inspect", "--format", "{{.Id}}",
                             "memu/pull-stand-in:1").stdout.strip()
    engine.docker("save", "-o", tmp_path / "stand-in.tar", "memu/pull-stand-in:1")
    engine.docker("image", "rm", "memu/pull-stand-in:1")
    return tmp_path / "stand-in.tar", image_id


def test_pulls_by_digest_with_progress_and_refuses_a_digest_the_registry_lacks(
        registry: Registry, engine: Engine, images: dict[str, lock.LockEntry],
        tmp_path: Path) -> None:
    archive, image_id = _stand_in(engine, tmp_path)
    digest = registry.push(archive, "standin/photos:v1")
    good = _pulled("photos", f"{registry.host}/standin/photos@{digest}")
    wrong = _pulled("llm", f"{registry.host}/standin/photos@sha256:{'0' * 64}")
    socket = Path(engine.host.removeprefix("unix://"))
    status, env = tmp_path / "pull.json", tmp_path / "pulled.env"
    seen: list[tuple[int, int]] = []

    class Watched(DockerApi):
        async def pull(self, repository: str, digest: str, on_progress):  # type: ignore[no-untyped-def]
            def spy(done: int, total: int) -> None:
                seen.append((done, total))
                on_progress(done, total)
            await super().pull(repository, digest, spy)

    pull = Pull(Watched(socket), status, env)
    try:
        assert asyncio.run(pull.run([good, wrong, images["valkey"]])) is False
        report = json.loads(status.read_text())
        assert report["state"] == "failed"
        assert report["images"]["photos"]["state"] == "pulled"
        assert report["images"]["llm"]["state"] == "failed"
        assert "manifest unknown" in report["images"]["llm"]["error"].lower()
        assert "valkey" not in report["images"]  # the slot carries it: the preload's
        assert env.read_text() == f"MEMU_IMAGE_PHOTOS={image_id}\n"
        # Progress over the (compressed) layer, ending complete.
        assert seen and all(0 <= d <= t for d, t in seen) and seen[-1][0] == seen[-1][1] > 0

        # Again: the image is there, nothing is pulled.
        seen.clear()
        again = Pull(Watched(socket), status, env)
        assert asyncio.run(again.run([good])) is True
        assert json.loads(status.read_text())["images"]["photos"] == {"state": "present"}
        assert seen == []

        # An update moves "photos" to another digest: the pulled image stays while the other
        # slot's version names it (a rollback runs it), and goes once neither slot does.
        record = tmp_path / "booted.json"
        for version, entry in (("0.1.0", good), ("0.2.0", wrong), ("0.3.0", wrong)):
            slot = tmp_path / version
            slot.mkdir()
            (slot / lock.LOCK_NAME).write_text(lock.dumps([entry]))
            preload = Preload(Docker(engine.host), slot, record, tmp_path / "preload.json",
                              version, tmp_path / "images.env")
            assert preload.run()
            there = engine.docker("image", "inspect", good.origin, check=False).returncode == 0
            assert there is (version != "0.3.0"), version
        assert preload.status["pruned"] == [good.origin]
    finally:
        engine.docker("image", "rm", good.origin, check=False)
