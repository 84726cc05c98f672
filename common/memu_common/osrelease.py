"""What an image says about itself in os-release(5), and the names its release artifacts
carry.

mkosi writes ``IMAGE_ID=memu-os`` and ``IMAGE_VERSION=`` into ``/usr/lib/os-release``; a
build variant with its own release artifacts adds ``VARIANT_ID=`` (the hailo option:
``image/build/31-os-release-variant.finalize``). A release channel holds the artifacts of
every variant side by side, each under its image name (``memu-os_0.2.0_x86-64.…`` and
``memu-os-hailo_0.2.0_x86-64.…``), and a box fetches only its own: an update never takes
the Hailo driver away from a box built with it, nor puts it on one built without.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

#: ``ImageId=`` in mkosi.conf: os-release's IMAGE_ID and the first part of every name.
IMAGE_ID = "memu-os"
#: os-release(5), in the order it says to try them: the first that exists is the one.
PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
#: A VARIANT_ID= of ours: os-release(5) allows lower-case letters, digits, ``.``, ``_`` and
#: ``-``; ours take no ``_`` or ``.``, which separate the parts of an artifact's name
#: (``<image name>_<version>_<arch>.<part>``), so that no variant's names can pass for
#: another's.
_VARIANT = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def parse(text: str) -> dict[str, str]:
    """Parse os-release(5) text (shell-style ``KEY=value`` lines, optionally quoted); lines
    that do not parse are skipped."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            continue
        result[key.strip()] = words[0] if words else ""
    return result


def read(paths: Sequence[Path] = PATHS) -> dict[str, str]:
    """The fields of the first of ``paths`` that exists ({} when none can be read)."""
    for path in paths:
        try:
            return parse(path.read_text("utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError):
            return {}
    return {}


def variant(fields: dict[str, str]) -> str | None:
    """The image's build variant (``VARIANT_ID``, e.g. "hailo"), or None for the plain image
    (also when the value is not a valid VARIANT_ID)."""
    value = fields.get("VARIANT_ID", "")
    return value if _VARIANT.match(value) else None


def image_name(variant: str | None = None) -> str:
    """The name a variant's outputs and release artifacts begin with: ``memu-os``, or
    ``memu-os-<variant>``.

    Raises:
        ValueError: ``variant`` is not a valid VARIANT_ID.
    """
    if variant is None:
        return IMAGE_ID
    if not _VARIANT.match(variant):
        raise ValueError(f"not a variant name: {variant!r}")
    return f"{IMAGE_ID}-{variant}"


def artifact_stem(version: str, arch: str, variant: str | None = None) -> str:
    """What a release's artifacts of ``version`` for ``arch`` (sysupdate's ``%a``:
    ``x86-64``, ``arm64``) begin with: ``memu-os_0.2.0_x86-64`` or
    ``memu-os-hailo_0.2.0_arm64``."""
    return f"{image_name(variant)}_{version}_{arch}"
