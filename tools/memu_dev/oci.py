"""Editing a one-image OCI image layout (as mkosi's ``Format=oci`` writes it) and reading a
docker-archive's manifest: the steps of memu_dev.containers that need no mkosi.

Formats: the OCI image layout and image config (opencontainers/image-spec: image-layout.md,
config.md) and Docker's ``docker save`` archive (``manifest.json``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memu_common import MemuError


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return layout / "blobs" / algo / hexd


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    path = _blob(layout, digest)
    if not path.exists():
        path.write_bytes(data)
    return digest, len(data)


@dataclasses.dataclass(frozen=True)
class Configured:
    """Digests of an OCI layout after its config was set: ``image_id`` is the config's."""

    image_id: str
    manifest_digest: str


def configure_layout(layout: Path, config: Mapping[str, Any], *,
                     labels: Mapping[str, str] = {}, ref: str | None = None) -> Configured:
    """Merge ``config`` (and ``labels``) into the image config of a one-image OCI layout.

    Rewrites the config blob, then the manifest that names it, then ``index.json`` (with an
    ``org.opencontainers.image.ref.name`` annotation when ``ref`` is given); removes the blobs
    no longer referenced. Idempotent: a second call with the same arguments changes nothing.

    Args:
        layout: an OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/``)
            holding exactly one image manifest, as mkosi's ``Format=oci`` writes.
        config: fields of the config's ``config`` object to set (replacing mkosi's).
        labels: merged into ``config.Labels``.
        ref: the reference name to record in the index.

    Raises:
        MemuError: the layout does not hold exactly one manifest, or a blob is missing.
    """
    index_path = layout / "index.json"
    try:
        index = json.loads(index_path.read_text())
        (desc,) = index["manifests"]
        manifest = json.loads(_blob(layout, desc["digest"]).read_bytes())
        old_config_digest = manifest["config"]["digest"]
        image_config = json.loads(_blob(layout, old_config_digest).read_bytes())
    except (OSError, ValueError, KeyError) as e:
        raise MemuError(f"{layout} is not a one-image OCI layout: {e}") from e
    cfg = dict(image_config.get("config") or {})
    cfg.update(config)
    if labels:
        cfg["Labels"] = {**cfg.get("Labels", {}), **labels}
    image_config["config"] = cfg
    config_digest, config_size = _write_blob(
        layout, json.dumps(image_config, sort_keys=True).encode())
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": config_size}
    manifest_digest, manifest_size = _write_blob(
        layout, json.dumps(manifest, sort_keys=True).encode())
    new_desc = {**desc, "digest": manifest_digest, "size": manifest_size}
    if ref:
        new_desc["annotations"] = {**desc.get("annotations", {}),
                                   "org.opencontainers.image.ref.name": ref}
    index["manifests"] = [new_desc]
    text = json.dumps(index, sort_keys=True)
    if text != index_path.read_text():  # unchanged: keep the mtime that staleness checks use
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(index_path)
    for old, new in ((old_config_digest, config_digest), (desc["digest"], manifest_digest)):
        if old != new:
            _blob(layout, old).unlink(missing_ok=True)
    return Configured(image_id=config_digest, manifest_digest=manifest_digest)


def archive_image_id(archive: Path) -> tuple[str, list[str]]:
    """The image config digest and repo tags a docker-archive's ``manifest.json`` names.

    This digest is the image ID ``docker load`` gives the image (Docker hashes the config).

    Raises:
        MemuError: not a tar with a one-image ``manifest.json``.
    """
    try:
        with tarfile.open(archive) as tar:
            f = tar.extractfile("manifest.json")
            if f is None:
                raise KeyError("manifest.json")
            (item,) = json.loads(f.read())
    except (OSError, tarfile.TarError, KeyError, ValueError) as e:
        raise MemuError(f"{archive} is not a one-image docker-archive: {e}") from e
    config = Path(item["Config"]).name.removesuffix(".json")
    return f"sha256:{config}", list(item.get("RepoTags", []))
