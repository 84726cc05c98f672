"""``just release`` cuts the /usr and verity artifacts to what the slot holds: checked on
synthetic partitions laid out as erofs(5) and veritysetup(8) describe them."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import pytest
from ota_fixtures import (
    BLOCK,
    erofs_partition,
    shipped_templates,
    source_pattern,
    source_patterns,
    verity_partition,
)

from memu_common import MemuError
from memu_dev import release
from memu_ota import delta
from memu_ota.blockindex import BlockIndex


@pytest.mark.parametrize("blocks", [1, 127, 128, 129, 16384, 121_600])
def test_verity_layout_matches_the_hash_tree(tmp_path: Path, blocks: int) -> None:
    used = verity_partition(tmp_path / "v.raw", blocks, 64 << 20)
    assert release.verity_layout(tmp_path / "v.raw") == (blocks * BLOCK, used)


def test_release_ships_only_the_used_bytes(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(release, "OUTPUT", tmp_path)
    usr = tmp_path / "memu-os_1.2.3_x86-64.usr.aa11.raw"
    verity = tmp_path / "memu-os_1.2.3_x86-64.usr-verity.bb22.raw"
    erofs_partition(usr, 300, 8 << 20)
    used = verity_partition(verity, 300, 1 << 20)
    slot = {"usr": usr, "usr-verity": verity}
    assert release.used_bytes(usr, slot) == 300 * BLOCK
    assert release.used_bytes(verity, slot) == used
    out = release.compressed(usr, 300 * BLOCK)
    data = gzip.decompress(out.read_bytes())
    assert len(data) == 300 * BLOCK and data[-1] == 1
    assert data == usr.read_bytes()[: 300 * BLOCK]


def test_release_refuses_a_cut_that_would_lose_data(tmp_path: Path) -> None:
    usr = tmp_path / "memu-os_1.2.3_x86-64.usr.aa11.raw"
    verity = tmp_path / "memu-os_1.2.3_x86-64.usr-verity.bb22.raw"
    erofs_partition(usr, 300, 8 << 20)
    verity_partition(verity, 299, 1 << 20)
    with pytest.raises(MemuError, match="dm-verity covers"):
        release.used_bytes(usr, {"usr": usr, "usr-verity": verity})
    verity_partition(verity, 300, 1 << 20)
    with usr.open("r+b") as f:  # something past the filesystem's end
        f.seek(400 * BLOCK)
        f.write(b"x")
    with pytest.raises(MemuError, match="past its first"):
        release.used_bytes(usr, {"usr": usr, "usr-verity": verity})
    (tmp_path / "junk.usr.cc33.raw").write_bytes(b"\0" * 4096)
    with pytest.raises(MemuError, match="no erofs"):
        release.erofs_bytes(tmp_path / "junk.usr.cc33.raw")


def test_a_release_carries_the_builds_package_manifest(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    stem = "memu-os_0.4.0_x86-64"
    monkeypatch.setattr(release, "OUTPUT", tmp_path)
    for part in release.PARTITIONS:
        (tmp_path / f"{stem}.{part}.cc33.raw").write_bytes(b"p")
    (tmp_path / f"{stem}.efi").write_bytes(b"uki")
    with pytest.raises(MemuError, match=rf"{stem}\.manifest"):
        release.artifacts("0.4.0", "n100")  # a build without its manifest is not released
    (tmp_path / f"{stem}.manifest").write_text('{"packages": []}')
    found = release.artifacts("0.4.0", "n100")
    assert found[f"{stem}.manifest"] == tmp_path / f"{stem}.manifest"
    assert sorted(found) == sorted([f"{stem}.usr.cc33.raw.gz", f"{stem}.usr-verity.cc33.raw.gz",
                                    f"{stem}.usr-verity-sig.cc33.raw.gz", f"{stem}.efi",
                                    f"{stem}.manifest"])


def test_a_pi_release_carries_its_boot_slot_where_its_transfer_finds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stem = "memu-os_0.4.0_arm64"
    monkeypatch.setattr(release, "OUTPUT", tmp_path)
    for part in (*release.PARTITIONS, "boot"):
        (tmp_path / f"{stem}.{part}.cc33.raw").write_bytes(b"p")
    (tmp_path / f"{stem}.manifest").write_text('{"packages": []}')
    found = release.artifacts("0.4.0", "pi5")
    # the boot slot instead of a UKI: the Pi boots no UKI
    assert sorted(found) == sorted([f"{stem}.usr.cc33.raw.gz", f"{stem}.usr-verity.cc33.raw.gz",
                                    f"{stem}.usr-verity-sig.cc33.raw.gz",
                                    f"{stem}.boot.cc33.raw.gz", f"{stem}.manifest"])
    boot = found[f"{stem}.boot.cc33.raw.gz"]
    assert release.used_bytes(boot, {}) is None  # a FAT image: shipped whole
    templates = shipped_templates(tmp_path / "defs", boot="tryboot")
    patterns = [source_pattern(m, "0.4.0", "arm64") for m in source_patterns(templates)]
    for name in found:
        if name.endswith(".gz"):
            assert sum(bool(p.match(name)) for p in patterns) == 1, name
    # and nothing the N100 ships: no UKI transfer on the Pi
    assert not any(p.match(f"{stem}.efi") for p in patterns)


def test_a_release_carries_delta_material_that_sysupdate_never_fetches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, Path]) -> None:
    stem = "memu-os_1.2.3_x86-64"
    monkeypatch.setattr(release, "OUTPUT", tmp_path)
    monkeypatch.setattr(release, "build_keys", lambda: SimpleNamespace(gnupghome=keys["release"]))
    erofs_partition(tmp_path / f"{stem}.usr.aa11.raw", 300, 8 << 20)
    verity_partition(tmp_path / f"{stem}.usr-verity.bb22.raw", 300, 1 << 20)
    (tmp_path / f"{stem}.usr-verity-sig.cc33.raw").write_bytes(b'{"rootHash": "00"}')
    (tmp_path / f"{stem}.efi").write_bytes(b"MZ" + bytes(9000))
    (tmp_path / f"{stem}.manifest").write_text('{"packages": []}')
    chan = release.release("1.2.3", "stable", tmp_path / "channels")

    plain = chan / f"{stem}.usr.aa11.img"
    built = tmp_path / f"{stem}.usr.aa11.raw"
    assert plain.read_bytes() == built.read_bytes()[:300 * BLOCK]
    sums = delta.parse_sums((chan / "SHA256SUMS").read_text())
    delta.verify_signature((chan / "SHA256SUMS").read_bytes(),
                           (chan / "SHA256SUMS.gpg").read_bytes(), keys["keyring"])
    for name in (plain.name, f"{stem}.usr-verity.bb22.img", f"{stem}.usr-verity-sig.cc33.img",
                 f"{stem}.efi"):
        index = BlockIndex.from_bytes((chan / delta.index_name(name)).read_bytes())
        assert index == BlockIndex.of_file(chan / name)
        assert {name, delta.index_name(name)} <= sums.keys()

    templates = shipped_templates(tmp_path / "templates")
    patterns = [source_pattern(m, "1.2.3") for m in source_patterns(templates)]
    fetched = {n for n in sums if any(p.match(n) for p in patterns)}
    assert fetched == {f"{stem}.usr.aa11.raw.gz", f"{stem}.usr-verity.bb22.raw.gz",
                       f"{stem}.usr-verity-sig.cc33.raw.gz", f"{stem}.efi"}
