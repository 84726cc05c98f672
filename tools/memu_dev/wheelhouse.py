"""Wheels for a container image's hash-pinned Python lock, fetched on the build host.

A container image built here that needs Python packages Debian does not have (Synapse) lists
them in ``<project>/requirements.txt``: every package pinned with ``==`` and its SHA-256
hashes (``just lock-synapse`` writes it with ``uv pip compile --generate-hashes``). The host's
pip downloads exactly those wheels for the image's Python and architecture into
``mkosi.cache/wheels/<image>/``, checking every hash; the image build then installs them
offline from there (the project's ``BuildSources=`` mounts the directory). The host fetches,
not the image build, because the host's certificate store and proxy settings are the ones
that reach PyPI, and because a build should not depend on the network beyond its inputs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from memu_common import run
from memu_dev.paths import REPO

log = logging.getLogger("memu.wheelhouse")

WHEELS = REPO / "mkosi.cache" / "wheels"
#: The images' Python (Debian trixie).
PYTHON_VERSION = "3.13"
#: mkosi architecture -> the machine part of a wheel's platform tag.
MACHINE = {"x86-64": "x86_64", "arm64": "aarch64"}
#: glibc of Debian trixie is 2.41; wheels for any manylinux up to that run on it.
MANYLINUX = [f"manylinux_2_{minor}" for minor in range(17, 42)] + ["manylinux2014"]


def platforms(arch: str) -> list[str]:
    """The ``--platform`` tags pip may pick wheels for on ``arch`` (mkosi name)."""
    machine = MACHINE[arch]
    return [f"{tag}_{machine}" for tag in MANYLINUX]


def fetch(lock_file: Path, name: str, arch: str) -> Path:
    """Download the wheels ``lock_file`` pins for ``arch`` into ``mkosi.cache/wheels/<name>``
    (files already there are kept); return that directory.

    Raises:
        MemuError: the lock names a package without a wheel for this Python and platform, or
            a download does not match its hash (pip's message is in the error).
    """
    dest = WHEELS / name
    dest.mkdir(parents=True, exist_ok=True)
    argv: list[str | Path] = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--require-hashes", "--only-binary=:all:",
        f"--python-version={PYTHON_VERSION}", "--implementation=cp",
        f"--abi=cp{PYTHON_VERSION.replace('.', '')}", "--abi=abi3", "--abi=none",
        *(f"--platform={p}" for p in platforms(arch)), "--platform=any",
        f"--requirement={lock_file}", f"--dest={dest}"]
    log.info("memu: fetching the wheels %s pins (%s) into %s", lock_file.name, arch,
             dest.relative_to(REPO))
    run(argv, hint=f"is PyPI reachable? Re-pin with `just lock-{name}` if a version is gone")
    return dest
