"""`just bench-size`'s arithmetic (memu_dev.bench_size) on trees and reports made here; the
real image is measured by the benchmark itself."""

from __future__ import annotations

from pathlib import Path

from memu_dev.bench_size import by_directory, data_extents, source_packages, xz_bytes


def test_files_are_summed_two_levels_deep(tmp_path: Path) -> None:
    for rel, size in (("lib/modules/6.12/a.ko", 300), ("lib/modules/6.12/b.ko", 200),
                      ("lib/firmware/i915/x.bin", 50), ("bin/python3", 70),
                      ("share/locale/de/LC_MESSAGES/x.mo", 9)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    (tmp_path / "bin/python").symlink_to("python3")  # a link weighs nothing
    (tmp_path / "lib/python3").hardlink_to(tmp_path / "bin/python3")  # counted once
    assert by_directory(tmp_path) == {"lib/modules": 500, "lib/firmware": 50, "bin": 70,
                                      "share/locale": 9}


def test_sizes_by_source_package_from_dpkgs_status() -> None:
    status = """Package: linux-image-6.12.57+deb13-amd64
Status: install ok installed
Source: linux-signed-amd64 (6.12.57+deb13)
Installed-Size: 8000
Description: Linux
 Installed-Size: 99 is a description line here

Package: libpython3.13-stdlib
Status: install ok installed
Source: python3.13
Installed-Size: 600

Package: python3.13
Status: install ok installed
Installed-Size: 400

Package: gone
Status: deinstall ok config-files
Installed-Size: 5000
"""
    assert source_packages(status) == {"linux-signed-amd64": 8000 * 1024,
                                       "python3.13": 1000 * 1024}


def test_a_sparse_files_data_extents_leave_its_holes_out(tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    with img.open("wb") as f:
        f.truncate(64 << 20)
        f.seek(8 << 20)
        f.write(b"d" * (1 << 20))
    extents = data_extents(img)
    assert sum(length for _, length in extents) < 4 << 20  # the hole is not read
    assert any(start <= 8 << 20 < start + length for start, length in extents)
    assert xz_bytes(img) < 10_000  # 1 MiB of one byte, the holes not fed at all
