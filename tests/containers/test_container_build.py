"""Container image build steps (memu_dev.containers) that need no mkosi: the declaration,
the image config rewrite of an OCI layout, Docker's health check, and the docker-archive
conversion (with skopeo, when the host has it)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from memu_common import MemuError
from memu_dev import containers, oci
from memu_dev.paths import REPO

DIGEST = "sha256:" + "d" * 64


def test_the_repository_declaration_parses() -> None:
    specs = containers.parse_declaration((REPO / "image/containers.toml").read_text())
    (bot,) = (s for s in specs if s.name == "intelligence")
    assert bot.build == "image/intelligence" and (REPO / bot.build / "mkosi.conf").is_file()
    assert bot.ref("0.1.0") == "memu/intelligence:0.1.0"
    assert bot.config["User"] != "root" and not str(bot.config["User"]).startswith("0")
    # the heartbeat check shipped in the image's own tree (not an import of the bot)
    check = bot.healthcheck["test"][0]
    assert (REPO / bot.build / "mkosi.extra" / check.lstrip("/")).is_file(), check
    assert "MEMU_BOT_HEARTBEAT_FILE=" + bot.healthcheck["test"][1] in bot.config["Env"]


def test_stack_images_are_declared_and_only_the_bot_reads_the_repository() -> None:
    specs = {s.name: s for s in containers.parse_declaration(
        (REPO / "image/containers.toml").read_text())}
    for name in ("postgres", "valkey", "nginx", "synapse"):
        assert specs[name].sources == ()
        assert specs[name].healthcheck["test"], name
    assert "intelligence" in specs["intelligence"].sources


def test_a_registry_entry_parses() -> None:
    (spec,) = containers.parse_declaration(
        f'[[image]]\nname = "synapse"\nrepository = "docker.io/matrixdotorg/synapse"\n'
        f'tag = "v1.2.3"\ndigest = "{DIGEST}"\nwhere = "slot"\n')
    assert spec.build is None and spec.ref("0.1.0") == "docker.io/matrixdotorg/synapse:v1.2.3"
    assert spec.where == "slot"


def test_a_store_image_is_never_copied_at_build() -> None:
    """An image for Docker's store on the device: its lock entry names the pinned digest to
    pull, and no archive (no registry is asked)."""
    (spec,) = containers.parse_declaration(
        f'[[image]]\nname = "ollama"\nrepository = "docker.io/ollama/ollama"\n'
        f'tag = "0.5.7"\ndigest = "{DIGEST}"\nwhere = "store"\n')
    entry = containers.copy_registry_image(spec, "x86-64", Path("/nonexistent"))
    assert not entry.in_slot and entry.origin == f"docker.io/ollama/ollama@{DIGEST}"
    assert entry.manifest_digest == DIGEST and entry.ref == "docker.io/ollama/ollama:0.5.7"


@pytest.mark.parametrize(("body", "why"), [
    ('repository = "r"\nbuild = "b"\ndigest = "' + DIGEST + '"\ntag = "t"', "either build"),
    ('repository = "r"', "either build"),
    ('repository = "r"\ntag = "t"\ndigest = "sha256:abc"', "registry image needs"),
    ('repository = "r"\ndigest = "' + DIGEST + '"', "registry image needs"),
    ('repository = "r"\ntag = "t"\ndigest = "' + DIGEST + '"', "where = one of"),
    ('repository = "r"\ntag = "t"\ndigest = "' + DIGEST + '"\nwhere = "usb"', "where = one of"),
    ('repository = "r"\nbuild = "b"\ntag = "t"', "drop tag"),
    ('repository = "r"\nbuild = "b"\nwhere = "slot"', "drop tag and where"),
    ('build = "b"', "repository is missing"),
    ('repository = "r"\nbuild = "b"\nflavour = "x"', "unknown keys"),
    ('repository = "r"\nbuild = "b"\n[image.healthcheck]\ntest = ["x"]', "healthcheck"),
    ('repository = "r"\nbuild = "b"\nsources = ["no/such/dir"]', "sources"),
])
def test_malformed_declarations_are_refused(body: str, why: str) -> None:
    with pytest.raises(MemuError, match=why):
        containers.parse_declaration(f'[[image]]\nname = "x"\n{body}\n')


def test_a_name_declared_twice_is_refused() -> None:
    one = '[[image]]\nname = "x"\nrepository = "r"\nbuild = "b"\n'
    with pytest.raises(MemuError, match="declared twice"):
        containers.parse_declaration(one + one)


def test_healthcheck_durations_become_nanoseconds() -> None:
    hc = containers.docker_healthcheck(
        {"test": ["bot", "--healthcheck"], "interval_s": 30, "timeout_s": 1.5,
         "start_period_s": 0, "start_interval_s": 0.5, "retries": 3})
    assert hc == {"Test": ["CMD", "bot", "--healthcheck"], "Interval": 30_000_000_000,
                  "Timeout": 1_500_000_000, "StartPeriod": 0, "StartInterval": 500_000_000,
                  "Retries": 3}


def _put(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_layout(root: Path) -> Path:
    """A one-image OCI layout shaped like mkosi's Format=oci output (one gzip layer)."""
    layout = root / "layout"
    (layout / "blobs/sha256").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    diff_id = "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
    layer = _put(layout, gzip.compress(buf.getvalue(), mtime=0))
    config = _put(layout, json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2025-01-01T00:00:00+00:00",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {"Cmd": ["/sbin/init"]}}).encode())
    manifest = _put(layout, json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }).encode())
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest}]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout


def read_image(layout: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(index, manifest, config) of a one-image layout, checking every digest and size."""
    index = json.loads((layout / "index.json").read_text())
    (desc,) = index["manifests"]
    blobs: list[bytes] = []
    for d in (desc, None):
        d = d or json.loads(blobs[0])["config"]
        data = (layout / "blobs/sha256" / d["digest"].removeprefix("sha256:")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == d["digest"].removeprefix("sha256:")
        assert len(data) == d["size"]
        blobs.append(data)
    return index, json.loads(blobs[0]), json.loads(blobs[1])


def test_configure_layout_sets_the_config_and_keeps_digests_consistent(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    before = set((layout / "blobs/sha256").iterdir())
    got = oci.configure_layout(
        layout, {"User": "10001:10001", "Entrypoint": ["/usr/bin/bot"], "Cmd": []},
        labels={"org.opencontainers.image.version": "1.0"}, ref="memu/x:1.0")
    index, manifest, config = read_image(layout)
    assert config["config"] == {"User": "10001:10001", "Entrypoint": ["/usr/bin/bot"],
                                "Cmd": [], "Labels": {"org.opencontainers.image.version": "1.0"}}
    assert config["rootfs"]["diff_ids"]  # the rest of mkosi's config is kept
    assert got.image_id == manifest["config"]["digest"]
    assert got.manifest_digest == index["manifests"][0]["digest"]
    assert index["manifests"][0]["annotations"] == {
        "org.opencontainers.image.ref.name": "memu/x:1.0"}
    after = set((layout / "blobs/sha256").iterdir())
    assert len(after) == 3 and len(before & after) == 1  # old config + manifest removed


def test_configure_layout_is_idempotent(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    args: dict[str, Any] = {"config": {"User": "1:1"}, "labels": {"a": "b"}, "ref": "r:1"}
    first = oci.configure_layout(layout, **args)
    mtime = (layout / "index.json").stat().st_mtime_ns
    assert oci.configure_layout(layout, **args) == first
    assert (layout / "index.json").stat().st_mtime_ns == mtime
    assert len(list((layout / "blobs/sha256").iterdir())) == 3


def test_configure_layout_refuses_a_multi_image_layout(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] *= 2
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(MemuError, match="one-image OCI layout"):
        oci.configure_layout(layout, {})


def test_archive_image_id_reads_manifest_json(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    manifest = json.dumps([{"Config": "f" * 64 + ".json", "RepoTags": ["memu/x:1.0"],
                            "Layers": ["l.tar"]}]).encode()
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    assert oci.archive_image_id(archive) == ("sha256:" + "f" * 64, ["memu/x:1.0"])
    with tarfile.open(tmp_path / "b.tar", "w"):
        pass
    with pytest.raises(MemuError, match="docker-archive"):
        oci.archive_image_id(tmp_path / "b.tar")


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_docker_archive_keeps_the_image_id(tmp_path: Path) -> None:
    """What build_image relies on: the image ID Docker will compute is the config we wrote."""
    layout = make_layout(tmp_path)
    got = oci.configure_layout(layout, {"User": "1:1"}, ref="memu/x:1.0")
    archive = tmp_path / "x.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}",
                    f"docker-archive:{archive}:memu/x:1.0"], check=True)
    image_id, tags = oci.archive_image_id(archive)
    assert image_id == got.image_id
    assert [t.removeprefix("docker.io/") for t in tags] == ["memu/x:1.0"]
