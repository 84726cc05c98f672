"""A build variant (the hailo option) is released beside the plain image in one channel under
its own name, and each box takes only its own: the names the build, ``just release``, the
rendered transfers and the delta updater use, checked against each other."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from ota_fixtures import (
    erofs_partition,
    shipped_templates,
    source_pattern,
    source_patterns,
    verity_partition,
)

from memu_common import osrelease
from memu_dev import release
from memu_dev.paths import REPO, image_path
from memu_ota import definitions, delta
from memu_ota.config import OtaConfig


def test_os_release_is_parsed_as_its_man_page_says(tmp_path: Path) -> None:
    text = "# c\nNAME='Memu OS'\nIMAGE_VERSION=\"0.1.0\"\nID=memu\nBROKEN\nEMPTY=\n"
    assert osrelease.parse(text) == {"NAME": "Memu OS", "IMAGE_VERSION": "0.1.0",
                                     "ID": "memu", "EMPTY": ""}
    etc, usr = tmp_path / "etc-os-release", tmp_path / "usr-os-release"
    usr.write_text("VARIANT_ID=hailo\n")
    assert osrelease.read((etc, usr)) == {"VARIANT_ID": "hailo"}  # the first that exists
    etc.write_text("ID=debian\n")
    assert osrelease.read((etc, usr)) == {"ID": "debian"}  # and only that one
    assert osrelease.read((tmp_path / "none",)) == {}


@pytest.mark.parametrize(("value", "variant", "name"), [
    (None, None, "memu-os"), ("hailo", "hailo", "memu-os-hailo"),
    ("Hailo", None, "memu-os"), ("../x", None, "memu-os"), ("", None, "memu-os"),
    ("hai_lo", None, "memu-os"), ("hai.lo", None, "memu-os")])
def test_the_image_name_follows_a_valid_variant_id(value: str | None, variant: str | None,
                                                   name: str) -> None:
    fields = {} if value is None else {"VARIANT_ID": value}
    assert osrelease.variant(fields) == variant
    assert osrelease.image_name(osrelease.variant(fields)) == name
    with pytest.raises(ValueError):
        osrelease.image_name("a/b")


def test_the_build_names_the_variant_where_the_box_reads_it(tmp_path: Path) -> None:
    """The hailo profile's finalize script, run as mkosi runs it, and its output read as
    the agent reads it; the build's output name is the release's."""
    root = tmp_path / "buildroot"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text('ID=debian\nIMAGE_ID="memu-os"\n')
    subprocess.run([REPO / "image/build/31-os-release-variant.finalize"], check=True,
                   env={**os.environ, "BUILDROOT": str(root), "MEMU_VARIANT": "hailo"})
    config = OtaConfig(os_release=(root / "etc/os-release", root / "usr/lib/os-release"))
    assert config.image_name == "memu-os-hailo"
    assert OtaConfig(os_release=(tmp_path / "none",)).image_name == "memu-os"
    assert image_path("n100", "0.2.0", "hailo").name == "memu-os-hailo_0.2.0_x86-64.raw"
    conf = (REPO / "mkosi.conf.d/60-hailo.conf").read_text()
    assert "Environment=MEMU_VARIANT=hailo" in conf and "Output=%i-hailo_%v_%a" in conf


def _built(output: Path, stem: str, arch_boot: str) -> None:
    """The split outputs of one build, as `just release` finds them."""
    erofs_partition(output / f"{stem}.usr.aa11.raw", 30, 1 << 20)
    verity_partition(output / f"{stem}.usr-verity.bb22.raw", 30, 1 << 16)
    (output / f"{stem}.usr-verity-sig.cc33.raw").write_bytes(b'{"rootHash": "00"}')
    if arch_boot == "systemd-boot":
        (output / f"{stem}.efi").write_bytes(b"MZ" + bytes(5000))
    else:
        (output / f"{stem}.boot.dd44.raw").write_bytes(b"FAT" + bytes(5000))
    (output / f"{stem}.manifest").write_text('{"packages": []}')


@pytest.mark.parametrize(("board", "arch", "boot"), [("n100", "x86-64", "systemd-boot"),
                                                     ("pi5", "arm64", "tryboot")])
def test_one_channel_serves_each_box_only_its_own_variant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, Path],
        board: str, arch: str, boot: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(release, "OUTPUT", out)
    monkeypatch.setattr(release, "build_keys", lambda: SimpleNamespace(gnupghome=keys["release"]))
    _built(out, f"memu-os_0.2.0_{arch}", boot)
    _built(out, f"memu-os-hailo_0.2.0_{arch}", boot)
    _built(out, f"memu-os-hailo_0.3.0_{arch}", boot)
    for version, variant in (("0.2.0", None), ("0.2.0", "hailo"), ("0.3.0", "hailo")):
        chan = release.release(version, "stable", tmp_path / "channels", board,
                               variant=variant)
    assert release.offers(chan) == f"memu-os {arch} 0.2.0; memu-os-hailo {arch} 0.2.0 0.3.0"
    sums = delta.parse_sums((chan / "SHA256SUMS").read_text())

    templates = shipped_templates(tmp_path / "templates", boot=boot)
    for name, variant in (("plain", None), ("hailo", "hailo")):
        etc = tmp_path / name / "os-release"
        etc.parent.mkdir()
        etc.write_text("ID=debian\n" + (f"VARIANT_ID={variant}\n" if variant else ""))
        config = OtaConfig(os_release=(etc,))
        defs = definitions.render(templates, tmp_path / name / "defs", "https://u.example/",
                                  "stable", image_name=config.image_name)
        assert not any("@IMAGE_NAME@" in d.read_text() for d in defs)
        patterns = source_patterns(tmp_path / name / "defs", "*.transfer")
        for version in ("0.2.0", "0.3.0"):
            fetched = {n for n in sums
                       if any(source_pattern(m, version, arch).match(n) for m in patterns)}
            stem = osrelease.artifact_stem(version, arch, variant)
            # every transfer finds its one artifact of the box's own name, and nothing else
            assert fetched == ({n for n in release.artifacts(version, board, variant)
                                if n.startswith(f"{stem}.") and not n.endswith(".manifest")}
                               if (variant, version) != (None, "0.3.0") else set())
            assert all(n.startswith(f"{stem}.") for n in fetched)
    if boot == "systemd-boot":  # a delta update looks for the same names (N100 only)
        stem = f"memu-os-hailo_0.2.0_{arch}"
        assert delta.artifact_names(sums, "0.2.0", arch, "memu-os-hailo") == [
            f"{stem}.usr-verity-sig.cc33.img", f"{stem}.usr-verity.bb22.img",
            f"{stem}.usr.aa11.img", f"{stem}.efi"]
