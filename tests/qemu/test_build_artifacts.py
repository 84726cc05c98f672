"""The built image's release artifacts, no VM: as `just check-reproducible` reads them
(memu_dev.reproducible: found by role, the UKI split into its PE sections), and as a delta
update rebuilds them (memu_ota.blockindex on the real erofs, verity and UKI of two builds)."""

from __future__ import annotations

from pathlib import Path

from ota_support import ensure_build

from memu_common import run
from memu_common.files import sha256_file
from memu_dev.bench_delta import rebuild_release, release_inputs
from memu_dev.paths import OUTPUT
from memu_dev.reproducible import explain, release_artifacts, uki_sections
from memu_ota.blockindex import Plan


def test_the_ukis_sections_are_dumped_one_by_one(built_image: Path, os_version: str,
                                                  tmp_path: Path) -> None:
    found = release_artifacts(OUTPUT, built_image.stem)
    sections = uki_sections(found[f"{built_image.stem}.efi"], tmp_path)
    assert {".linux", ".initrd", ".cmdline", ".osrel", ".uname"} <= set(sections), sections
    assert "usrhash=" in (tmp_path / "cmdline").read_text()
    assert f'IMAGE_VERSION="{os_version}"' in (tmp_path / "osrel").read_text()
    assert (tmp_path / "linux").stat().st_size > 5_000_000  # the kernel


def test_a_ucode_difference_is_known_and_any_other_is_not(built_image: Path,
                                                          tmp_path: Path) -> None:
    """Two UKIs that differ only in the microcode cpio (mkosi 25.3 writes its file times):
    the known difference, with its reason; the check accepts it."""
    uki = release_artifacts(OUTPUT, built_image.stem)[f"{built_image.stem}.efi"]
    sections = tmp_path / "sections"
    assert ".ucode" in uki_sections(uki, sections)
    ucode = bytearray((sections / "ucode").read_bytes())
    assert ucode[:6] == b"070701"  # newc cpio
    ucode[46:54] = b"6a000000"  # the first header's mtime field (newc: offset 46, 8 hex)
    changed = tmp_path / "changed-ucode"
    changed.write_bytes(ucode)
    other = tmp_path / "other.efi"
    run(["objcopy", f"--update-section=.ucode={changed}", str(uki), str(other)])
    found = explain(uki.name, uki, other, tmp_path / "work")
    assert found.known and "mkosi 25.3" in found.sentence, found


def test_a_release_is_rebuilt_bit_for_bit_from_the_one_before(built_image: Path,
                                                             tmp_path: Path) -> None:
    """0.3.0 (the tree plus one changed file) rebuilt from 0.1.0's artifacts as a box does:
    each /usr erofs, verity tree and UKI planned against all of 0.1.0's (as the release
    cuts them), the missing ranges read from 0.3.0's own file in place of the channel;
    every result is 0.3.0's artifact byte for byte, for under 5 % of the full download."""
    ensure_build("0.3.0", "v-marker")
    new = release_inputs("0.3.0")

    def same(artifact: Path, size: int, out: Path, how: Plan) -> None:
        assert sha256_file(out) == sha256_file(artifact, size), artifact.name
        assert how.copies, f"{artifact.name}: nothing of 0.1.0's was used"

    fetched = rebuild_release(release_inputs("0.1.0"), new, tmp_path, same)
    full = sum(download for _, _, download in new)
    assert fetched < 0.05 * full, (fetched, full)
