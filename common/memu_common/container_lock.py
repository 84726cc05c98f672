"""The container lock file: which container images an OS image carries, and their digests.

Written at build time by ``memu_dev.containers`` next to the archives it lists
(``/usr/share/memu/containers/containers.lock.json`` in the OS image); read on the device by
the step that loads the archives into Docker. JSON, so both sides need only the standard
library. Example (one built image)::

    {
      "schema": 1,
      "images": [
        {
          "name": "intelligence",
          "ref": "memu/intelligence:0.1.0",
          "source": "built",
          "origin": "image/intelligence",
          "platform": "linux/amd64",
          "image_id": "sha256:4e3f…",
          "manifest_digest": "sha256:9333…",
          "archive": "memu-intelligence_0.1.0_x86-64.tar",
          "archive_sha256": "sha256:c0ff…",
          "archive_bytes": 161102848,
          "healthcheck": ["/usr/bin/memu-intelligence", "--healthcheck"]
        }
      ]
    }

Fields: ``ref`` is the tag ``docker load`` creates; ``source`` is ``built`` (``origin`` = the
mkosi project) or ``registry`` (``origin`` = ``repository@digest`` it was copied from by
skopeo); ``image_id`` is the digest of the image config, which is what ``docker image
inspect --format {{.Id}}`` shows after loading, so the loader can tell whether the image is
already there; ``manifest_digest`` is the OCI manifest digest (for registry images: the
pinned digest); ``archive`` is a file name relative to the lock file, in docker-archive
format (``manifest.json`` + layers; what ``docker load`` reads); ``archive_sha256`` is the
archive's SHA-256 (checked before loading).

A registry image that is not in the slot (too big for it, or its registry was not reachable
when the image was built) has ``archive`` ``""``, ``archive_sha256`` ``""``,
``archive_bytes`` 0 and ``image_id`` ``""`` (unknown until it is pulled): the device pulls it
by ``origin`` (``repository@digest``) when it is online (:attr:`LockEntry.in_slot`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memu_common import files
from memu_common.errors import MemuError

SCHEMA = 1
LOCK_NAME = "containers.lock.json"
SOURCES = ("built", "registry")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class LockEntry:
    """One container image an OS image carries (see the module docstring for each field)."""

    name: str
    ref: str
    source: str
    origin: str
    platform: str
    image_id: str
    manifest_digest: str
    archive: str
    archive_sha256: str
    archive_bytes: int
    healthcheck: tuple[str, ...] = ()

    @property
    def in_slot(self) -> bool:
        """Whether the image's archive is carried next to the lock file (else it is pulled)."""
        return bool(self.archive)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise MemuError(f"container lock: {self.name}: source {self.source!r} is not one "
                            f"of {', '.join(SOURCES)}")
        if not self.archive and self.source == "registry":
            if (self.image_id, self.archive_sha256, self.archive_bytes) != ("", "", 0) or \
                    "@" not in self.origin or not _DIGEST.match(self.manifest_digest):
                raise MemuError(f"container lock: {self.name}: an image pulled on the device "
                                "has no image ID or archive fields, and origin "
                                "repository@digest")
            return
        for field in ("image_id", "manifest_digest", "archive_sha256"):
            if not _DIGEST.match(getattr(self, field)):
                raise MemuError(f"container lock: {self.name}: {field} "
                                f"{getattr(self, field)!r} is not sha256:<64 hex digits>")
        if "/" in self.archive or self.archive in ("", ".", ".."):
            raise MemuError(f"container lock: {self.name}: archive {self.archive!r} must be "
                            "a plain file name next to the lock file")


def to_pull(name: str, ref: str, origin: str, platform: str,
            healthcheck: tuple[str, ...] = ()) -> LockEntry:
    """The entry of a registry image the slot does not carry: the device pulls ``origin``
    (``repository@sha256:<hex>``), whose digest is the entry's ``manifest_digest``.

    Raises:
        MemuError: ``origin`` is not pinned by digest.
    """
    return LockEntry(name=name, ref=ref, source="registry", origin=origin, platform=platform,
                     image_id="", manifest_digest=origin.rpartition("@")[2], archive="",
                     archive_sha256="", archive_bytes=0, healthcheck=healthcheck)


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes (the OCI digest form; :func:`files.sha256_file`).

    Raises:
        OSError: the file cannot be read.
    """
    return f"sha256:{files.sha256_file(path)}"


def dumps(entries: Sequence[LockEntry]) -> str:
    """The lock file's text for ``entries`` (sorted keys, two-space indent, final newline).

    Raises:
        MemuError: two entries share a name or an archive file.
    """
    for field in ("name", "archive"):
        values = [getattr(e, field) for e in entries if getattr(e, field)]
        if len(values) != len(set(values)):
            raise MemuError(f"container lock: duplicate {field} in {values}")
    images = []
    for e in entries:
        d = dataclasses.asdict(e)
        d["healthcheck"] = list(e.healthcheck)
        images.append(d)
    return json.dumps({"schema": SCHEMA, "images": images}, indent=2, sort_keys=True) + "\n"


def loads(text: str) -> list[LockEntry]:
    """Parse a lock file's text.

    Raises:
        MemuError: not JSON, another schema version, or an entry with missing, extra or
            malformed fields.
    """
    try:
        data: Any = json.loads(text)
    except ValueError as e:
        raise MemuError(f"container lock: not JSON: {e}") from e
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MemuError(f"container lock: expected schema {SCHEMA}, got "
                        f"{data.get('schema') if isinstance(data, dict) else data!r}")
    names = {f.name for f in dataclasses.fields(LockEntry)}
    entries = []
    for raw in data.get("images", []):
        if not isinstance(raw, dict) or set(raw) - names or {
                f.name for f in dataclasses.fields(LockEntry)
                if f.default is dataclasses.MISSING} - set(raw):
            raise MemuError(f"container lock: bad entry {raw!r}",
                            hint=f"an entry has exactly these keys: {', '.join(sorted(names))}")
        raw = dict(raw, healthcheck=tuple(raw.get("healthcheck", ())))
        entries.append(LockEntry(**raw))
    return entries


def read(directory: Path) -> list[LockEntry]:
    """The entries of ``directory``/containers.lock.json.

    Raises:
        MemuError: the file is missing or malformed.
    """
    path = directory / LOCK_NAME
    try:
        return loads(path.read_text())
    except OSError as e:
        raise MemuError(f"container lock: cannot read {path}: {e.strerror}") from e


def verify(directory: Path, entry: LockEntry) -> Path:
    """Check that ``entry``'s archive in ``directory`` has the recorded size and SHA-256.

    Returns:
        The archive's path.

    Raises:
        MemuError: the archive is missing, or its size or digest differ from the lock file.
    """
    path = directory / entry.archive
    try:
        size = path.stat().st_size
    except OSError as e:
        raise MemuError(f"{entry.name}: archive {path} is missing: {e.strerror}") from e
    if size != entry.archive_bytes:
        raise MemuError(f"{entry.name}: {path} has {size} bytes, the lock file says "
                        f"{entry.archive_bytes}")
    digest = sha256_file(path)
    if digest != entry.archive_sha256:
        raise MemuError(f"{entry.name}: {path} has digest {digest}, the lock file says "
                        f"{entry.archive_sha256}")
    return path
