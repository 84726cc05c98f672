"""A file tree holding a Debian package from trixie-backports, for a test build in which one
package the image carries is upgraded (`just bench-ota`'s package-upgrade case).

The package is fetched with the host's apt-get using a private state directory and
tools/trixie-backports.sources (as tools/setup-mkosi.sh fetches mkosi) and unpacked with
``dpkg-deb -x``; only its ``usr/`` goes into the tree, which ``--extra-tree`` lays over the
image's ``/usr``: the files an ``apt-get install -t trixie-backports`` would write there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from memu_common import MemuError, run
from memu_dev.paths import REPO

SOURCES = REPO / "tools/trixie-backports.sources"
APT_DIR = REPO / ".tools/apt-backports"


def _apt(*args: str, cwd: Path | None = None) -> str:
    opts = ["-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={APT_DIR / 'srcparts'}",
            "-o", f"Dir::State::status={APT_DIR / 'status'}",
            "-o", f"Dir::State::Lists={APT_DIR / 'lists'}",
            "-o", f"Dir::Cache={APT_DIR / 'cache'}", "-o", "APT::Get::List-Cleanup=0"]
    return run(["apt-get", *opts, *args], cwd=cwd, timeout=600,
               hint="the Debian mirror must be reachable").stdout


def packages_tree(packages: list[str], out: Path) -> dict[str, str]:
    """Unpack trixie-backports' ``packages`` (each ``.deb`` fetched once, then kept in
    ``.tools/apt-backports``) into ``out``/usr; return package -> version.

    Raises:
        MemuError: apt-get or dpkg-deb failed, or a package holds nothing under usr/.
    """
    for d in ("srcparts", "lists/partial", "cache", "debs"):
        (APT_DIR / d).mkdir(parents=True, exist_ok=True)
    (APT_DIR / "status").touch()
    shutil.copyfile(SOURCES, APT_DIR / "srcparts" / SOURCES.name)
    shutil.rmtree(out, ignore_errors=True)
    (out / "usr").mkdir(parents=True)
    updated = False
    versions = {}
    for package in packages:
        debs = sorted((APT_DIR / "debs").glob(f"{package}_*.deb"))
        if not debs:
            if not updated:
                _apt("update", "-qq")
                updated = True
            _apt("download", f"{package}/trixie-backports", cwd=APT_DIR / "debs")
            debs = sorted((APT_DIR / "debs").glob(f"{package}_*.deb"))
        if not debs:
            raise MemuError(f"apt-get download {package}/trixie-backports fetched nothing")
        versions[package] = run(["dpkg-deb", "--field", str(debs[-1]), "Version"]
                                ).stdout.strip()
        unpacked = out.with_name(out.name + ".deb")
        shutil.rmtree(unpacked, ignore_errors=True)
        run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)])
        if not (unpacked / "usr").is_dir():
            raise MemuError(f"{debs[-1].name} holds nothing under usr/")
        shutil.copytree(unpacked / "usr", out / "usr", symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(unpacked)
    return versions
