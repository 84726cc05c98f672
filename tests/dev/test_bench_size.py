"""`just bench-size`'s arithmetic (memu_dev.bench_size) on trees and reports made here; the
real image is measured by the benchmark itself."""

from __future__ import annotations

from pathlib import Path

from memu_dev.bench_size import by_directory, source_packages


def test_files_are_summed_two_levels_deep(tmp_path: Path) -> None:
    for rel, size in (("lib/modules/6.12/a.ko", 300), ("lib/modules/6.12/b.ko", 200),
                      ("lib/firmware/i915/x.bin", 50), ("bin/python3", 70),
                      ("share/locale/de/LC_MESSAGES/x.mo", 9)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    (tmp_path / "bin/python").symlink_to("python3")  # a link weighs nothing
    assert by_directory(tmp_path) == {"lib/modules": 500, "lib/firmware": 50, "bin": 70,
                                      "share/locale": 9}


def test_sizes_by_source_package_from_mkosis_report() -> None:
    report = """Packages: 3
Size:     9000
--------------------------------------------------------------------------------
SourcePackage: linux-signed-amd64
Packages:      linux-image-6.12.57+deb13-amd64
Size:          8000

--------------------------------------------------------------------------------
SourcePackage: python3.13
Packages:      python3.13 libpython3.13-stdlib
Size:          1000

Changelog:
python3.13 (3.13.5-2) unstable; urgency=medium
  * Size: 12 is not a field here
""".splitlines()
    assert source_packages(report) == {"linux-signed-amd64": 8000, "python3.13": 1000}
