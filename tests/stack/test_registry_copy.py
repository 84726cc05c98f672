"""Registry images copied by digest at build time (memu_dev.containers.copy_registry_image),
against a real registry on the host's loopback (Debian's docker-registry 2.8, plain HTTP)
holding a stand-in built here (the Valkey image of `just build`): the pinned digest is copied
into a docker-archive whose image ID is the built image's, which the device's preload
accepts; a digest the registry does not have and a blob changed in the registry's storage
fail the build with a message that says what to do; an unreachable registry does not fail
it, and the image is left to the device's pull by digest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from memu_agent.preload import Docker, Preload
from memu_common import MemuError
from memu_common import container_lock as lock
from memu_dev import containers
from memu_dev.engine import Engine
from memu_dev.registry import Registry, free_port

pytestmark = pytest.mark.services


def _spec(host: str, digest: str) -> containers.ImageSpec:
    return containers.ImageSpec(name="element", repository=f"{host}/standin/element",
                                tag="v1", digest=digest, where="slot")


def test_a_pinned_digest_is_copied_into_the_slot_with_the_image_id_the_preload_expects(
        registry: Registry, engine: Engine, images: dict[str, lock.LockEntry],
        tmp_path: Path) -> None:
    host = registry.host
    digest = registry.push(containers.TREE / images["valkey"].archive, "standin/element:v1")
    slot = tmp_path / "slot"
    slot.mkdir()
    entry = containers.copy_registry_image(_spec(host, digest), "x86-64", slot,
                                           tls_verify=False)
    assert entry.in_slot and entry.source == "registry"
    assert entry.origin == f"{host}/standin/element@{digest}"
    assert entry.manifest_digest == digest and entry.image_id == images["valkey"].image_id
    assert (entry.archive_sha256, entry.archive_bytes) == (
        lock.sha256_file(slot / entry.archive), (slot / entry.archive).stat().st_size)
    (slot / lock.LOCK_NAME).write_text(lock.dumps([entry]))

    # The device side: the preload checks the archive and finds the image by its recorded ID
    # (already in this engine: the stack tests loaded the built Valkey).
    state = tmp_path / "state"
    preload = Preload(Docker(engine.host), slot, state / "booted.json", state / "status.json",
                      "1", state / "images.env")
    assert preload.run(), preload.status
    assert preload.status["images"]["element"]["state"] == "present"
    assert (state / "images.env").read_text() == f"MEMU_IMAGE_ELEMENT={entry.image_id}\n"
    engine.docker("image", "rm", entry.ref)


def test_a_digest_the_registry_does_not_have_fails_the_build(
        registry: Registry, images: dict[str, lock.LockEntry], tmp_path: Path) -> None:
    host = registry.host
    registry.push(containers.TREE / images["valkey"].archive, "standin/element:v1")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(MemuError) as failed:
        containers.copy_registry_image(_spec(host, wrong), "x86-64", tmp_path, tls_verify=False)
    assert f"copying {host}/standin/element@{wrong} failed" in failed.value.message
    assert "manifest unknown" in failed.value.message.lower()
    assert "skopeo inspect" in (failed.value.hint or "")
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".*.tmp"))


def test_a_blob_changed_in_the_registry_fails_the_build(
        registry: Registry, images: dict[str, lock.LockEntry], tmp_path: Path) -> None:
    """The registry serves the pinned manifest, but a layer whose bytes no longer match the
    digest the manifest names: skopeo's check refuses it."""
    host = registry.host
    digest = registry.push(containers.TREE / images["valkey"].archive, "standin/element:v1")
    layers = [p for p in (registry.storage / "docker/registry/v2/blobs/sha256").glob("*/*/data")
              if p.read_bytes()[:2] == b"\x1f\x8b"]  # the gzip layer
    assert len(layers) == 1, layers
    with layers[0].open("r+b") as f:  # one byte in the middle of the compressed layer
        f.seek(layers[0].stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(MemuError, match=r"copying .* failed"):
        containers.copy_registry_image(_spec(host, digest), "x86-64", tmp_path,
                                       tls_verify=False)
    assert not list(tmp_path.glob("*.tar"))


def test_an_unreachable_registry_leaves_the_image_to_the_device(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    caplog.set_level(logging.WARNING, logger="memu.containers")
    entry = containers.copy_registry_image(_spec(host, "sha256:" + "1" * 64), "x86-64",
                                           tmp_path, tls_verify=False)
    assert not entry.in_slot and entry.origin == f"{host}/standin/element@sha256:{'1' * 64}"
    assert "pulls it by digest when it is online" in caplog.text
