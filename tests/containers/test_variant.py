"""Test builds' changed image (memu_dev.variant): one lock entry replaced by a relabelled copy
whose image ID is its new config's SHA-256, layers untouched, the other entries as they were."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from memu_common import container_lock as lock
from memu_dev.variant import CONTAINERS, changed_image_tree


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _entry(directory: Path, name: str, layer: bytes) -> lock.LockEntry:
    config = json.dumps({"config": {"Cmd": ["/x"]}, "rootfs": {"type": "layers"}}).encode()
    image_id = hashlib.sha256(config).hexdigest()
    archive = directory / f"memu-{name}_0.1.0_x86-64.tar"
    with tarfile.open(archive, "w") as t:
        _add(t, "layer.tar", layer)
        _add(t, f"{image_id}.json", config)
        _add(t, "manifest.json", json.dumps([{"Config": f"{image_id}.json", "Layers": [
            "layer.tar"], "RepoTags": [f"docker.io/memu/{name}:0.1.0"]}]).encode())
        _add(t, "repositories", b"{}")
    return lock.LockEntry(
        name=name, ref=f"memu/{name}:0.1.0", source="built", origin=f"image/{name}",
        platform="linux/amd64", image_id=f"sha256:{image_id}", manifest_digest="sha256:" + "0" * 64,
        archive=archive.name, archive_sha256=lock.sha256_file(archive),
        archive_bytes=archive.stat().st_size)


def test_one_image_is_relabelled_and_the_rest_kept(tmp_path: Path) -> None:
    built = tmp_path / "built"
    built.mkdir()
    entries = [_entry(built, "nginx", b"nginx layer"), _entry(built, "valkey", b"valkey")]
    (built / lock.LOCK_NAME).write_text(lock.dumps(entries))

    new = changed_image_tree(built, tmp_path / "tree", "nginx", "0.9.0")

    dest = tmp_path / "tree" / CONTAINERS
    assert lock.read(dest) == [new, entries[1]]
    assert new.ref == "memu/nginx:0.9.0" and new.archive == "memu-nginx_0.9.0_x86-64.tar"
    assert new.image_id != entries[0].image_id
    archive = dest / new.archive
    assert (new.archive_sha256, new.archive_bytes) == (lock.sha256_file(archive),
                                                       archive.stat().st_size)
    with tarfile.open(archive) as t:
        (manifest,) = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        config_bytes = t.extractfile(manifest["Config"]).read()  # type: ignore[union-attr]
        layer = t.extractfile("layer.tar").read()  # type: ignore[union-attr]
        assert "repositories" not in t.getnames()
    assert f"sha256:{hashlib.sha256(config_bytes).hexdigest()}" == new.image_id
    assert json.loads(config_bytes)["config"]["Labels"] == {"org.memu.test.version": "0.9.0"}
    assert manifest["RepoTags"] == ["docker.io/memu/nginx:0.9.0"] and layer == b"nginx layer"
    # Made once: a second call reads the tree back.
    assert changed_image_tree(built, tmp_path / "tree", "nginx", "0.9.0") == new
