"""The build's ``hailo`` option: the Hailo-8/8L driver and firmware in the image.

    MEMU_HAILO=1 MEMU_HAILO_SRC=~/hailo/hailort-drivers \
        MEMU_HAILO_FW=~/hailo/hailo8_fw.4.20.0.bin just build

What is pinned (driver, firmware and runtime versions, where the driver's kbuild directory and
version header are) is in ``image/hailo.toml``. :func:`stage` checks what the operator gave
against it and copies both under ``mkosi.cache/hailo``, the hailo profile's build source
(``mkosi.conf.d/60-hailo.conf``): ``driver/`` (the source tree, compiled with kbuild against
the image's kernel by ``image/build/20-kmod.build.chroot``) and ``firmware/<path>`` (installed
as ``/usr/lib/firmware/<path>`` by ``image/build/30-hailo-firmware.finalize``).
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from memu_common import MemuError
from memu_dev.paths import REPO

PINS = REPO / "image/hailo.toml"
#: The hailo profile's build source (``BuildSources=mkosi.cache/hailo:hailo``).
STAGE = REPO / "mkosi.cache/hailo"
#: Where the image build finds the driver's kbuild directory, below ``$SRCDIR``.
SRC_IN_BUILD = "hailo/driver"

_DEFINE = re.compile(r"^\s*#\s*define\s+HAILO_DRV_VER_(MAJOR|MINOR|REVISION)\s+(\d+)\s*$",
                     re.MULTILINE)


@dataclass(frozen=True)
class Pins:
    """``image/hailo.toml``: the versions Hailo requires to match, and the driver's layout.

    Attributes:
        driver: the hailort-drivers release (``4.20.0``).
        kbuild: kbuild's ``M=`` directory inside the driver's source tree.
        version_header: the header in the source tree that defines ``HAILO_DRV_VER_*``.
        firmware: the firmware's release.
        firmware_path: where the firmware goes below ``/usr/lib/firmware``.
        firmware_url: where the operator downloads it.
        runtime: HailoRT's release, for the container that will use the NPU.
    """

    driver: str
    kbuild: str
    version_header: str
    firmware: str
    firmware_path: str
    firmware_url: str
    runtime: str


def pins(path: Path = PINS) -> Pins:
    """Read the pins.

    Raises:
        MemuError: the file is missing a key, or the three versions differ.
    """
    data = tomllib.loads(path.read_text())
    try:
        p = Pins(driver=data["driver"]["version"], kbuild=data["driver"]["kbuild"],
                 version_header=data["driver"]["version_header"],
                 firmware=data["firmware"]["version"], firmware_path=data["firmware"]["path"],
                 firmware_url=data["firmware"]["url"], runtime=data["runtime"]["version"])
    except KeyError as e:
        raise MemuError(f"{path}: no {e.args[0]!r}", hint="see the comments in it") from None
    if len({p.driver, p.firmware, p.runtime}) != 1:
        raise MemuError(f"{path}: driver {p.driver}, firmware {p.firmware} and runtime "
                        f"{p.runtime} differ", hint="Hailo requires one release for all three")
    return p


@dataclass(frozen=True)
class Settings:
    """The operator's build settings for the option (paths on the build host).

    Attributes:
        source: the hailort-drivers checkout (``MEMU_HAILO_SRC``), or None when not given.
        firmware: the firmware file (``MEMU_HAILO_FW``), or None when not given.
    """

    source: Path | None
    firmware: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """``MEMU_HAILO_SRC`` and ``MEMU_HAILO_FW`` (``~`` expanded; empty means unset)."""
        def path(name: str) -> Path | None:
            value = env.get(name, "")
            return Path(value).expanduser() if value else None
        return cls(source=path("MEMU_HAILO_SRC"), firmware=path("MEMU_HAILO_FW"))


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the build's hailo option is on (``MEMU_HAILO`` is 1, yes or true)."""
    return env.get("MEMU_HAILO", "").strip().lower() in ("1", "yes", "true")


def source_version(source: Path, p: Pins) -> str:
    """The driver release a source tree is, from its ``HAILO_DRV_VER_*`` defines.

    Raises:
        MemuError: the tree has no kbuild directory or version header where the pins say.
    """
    if not (source / p.kbuild / "Kbuild").is_file() and not (
            source / p.kbuild / "Makefile").is_file():
        raise MemuError(f"{source} is not a hailort-drivers source tree: no {p.kbuild}/Kbuild "
                        "or Makefile",
                        hint=f"check out the driver (image/hailo.toml) at v{p.driver} "
                             "and give its top directory as MEMU_HAILO_SRC")
    header = source / p.version_header
    try:
        found = dict(_DEFINE.findall(header.read_text(errors="replace")))
    except OSError:
        found = {}
    if set(found) != {"MAJOR", "MINOR", "REVISION"}:
        raise MemuError(f"{header} does not say the driver's version (HAILO_DRV_VER_MAJOR, "
                        "_MINOR, _REVISION)",
                        hint=f"check out hailort-drivers at v{p.driver}")
    return f"{found['MAJOR']}.{found['MINOR']}.{found['REVISION']}"


def stage(settings: Settings, p: Pins | None = None, dest: Path = STAGE) -> dict[str, str]:
    """Check the operator's driver source and firmware against the pins and copy them to
    ``dest`` (replacing what an earlier build staged); return the environment the image
    build needs (``MEMU_KMOD_DIR_HAILO``: kbuild's directory below ``$SRCDIR``).

    Raises:
        MemuError: a setting is missing, a path does not exist or is empty, or the source is
            another release than the pinned one; the hint says how to get the right one.
    """
    p = p or pins()
    missing = [name for name, value in (("MEMU_HAILO_SRC", settings.source),
                                        ("MEMU_HAILO_FW", settings.firmware)) if value is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise MemuError(
            f"the hailo option is on but {' and '.join(missing)} {verb} not set",
            hint=f"set MEMU_HAILO_SRC to a hailort-drivers checkout at v{p.driver} and "
                 f"MEMU_HAILO_FW to the Hailo-8 firmware {p.firmware} ({p.firmware_url}); "
                 "or build without MEMU_HAILO")
    assert settings.source is not None and settings.firmware is not None
    if not settings.source.is_dir():
        raise MemuError(f"MEMU_HAILO_SRC={settings.source} is not a directory",
                        hint=f"clone hailort-drivers (branch hailo8) at v{p.driver}")
    if not settings.firmware.is_file() or settings.firmware.stat().st_size == 0:
        raise MemuError(f"MEMU_HAILO_FW={settings.firmware} is not a firmware file",
                        hint=f"download the Hailo-8 firmware {p.firmware}: {p.firmware_url}")
    with settings.firmware.open("rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"<"):
        # What a failed download leaves: the server's XML or HTML error page.
        raise MemuError(f"MEMU_HAILO_FW={settings.firmware} is a web page, not firmware (a "
                        "failed download?)",
                        hint=f"download it again with `curl -fLO {p.firmware_url}`")
    found = source_version(settings.source, p)
    if found != p.driver:
        raise MemuError(f"{settings.source} is hailort-drivers {found}, not the pinned "
                        f"{p.driver}",
                        hint=f"check out v{p.driver}, or change every version in "
                             f"{PINS.relative_to(REPO)} together (driver, firmware, runtime)")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(settings.source, dest / "driver", symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "*.o", "*.ko", "*.cmd"))
    fw = dest / "firmware" / p.firmware_path
    fw.parent.mkdir(parents=True)
    shutil.copyfile(settings.firmware, fw)
    return {"MEMU_KMOD_DIR_HAILO": f"{SRC_IN_BUILD}/{p.kbuild}"}
