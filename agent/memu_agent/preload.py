"""Load the container images the booted OS slot carries into Docker, before the stack starts.

    /usr/bin/python3 -m memu_agent.preload     (memu-stack-preload.service, after docker.service)

The slot's images are docker-archives in ``/usr/share/memu/containers/`` listed in its lock
file (:mod:`memu_common.container_lock`). For each entry, in the lock's order:

- Docker already has the image ID: only its tag (``memu/postgres:<OS version>``) is set,
  when it lacks it (a warm boot makes no Docker call for it).
- otherwise the archive is streamed into ``docker load`` and hashed on the way (one read of
  the archive); the image is kept only when the archive's size and SHA-256 match the lock and
  the loaded image has the recorded ID; else it is removed again and reported "refused". A
  refused image does not stop the others.

Then images of our repositories that neither OS slot needs are removed (pruned), and so
are registry images the device pulled (:mod:`memu_agent.pull`) by a digest neither slot's
lock names any more. Which images the other slot needs is remembered on the writable
partition (``/var/lib/memu/containers/booted.json``: the image IDs and pulled references of
the last two OS versions that booted), because the other slot's ``/usr`` is not mounted:
after an update the previous version's images stay, so a rollback runs exactly what that
slot shipped, without loading or pulling.

The image IDs of the images in Docker go to ``/run/memu-stack/images.env``
(``MEMU_IMAGE_POSTGRES=sha256:…``), which the Compose project reads (``compose.yaml``).
Progress and result go to ``/run/memu-stack/preload.json`` after every image, for
``/api/status`` (see :func:`memu_agent.stack.read_preload`)::

    {"version": "0.2.0", "state": "running" | "done" | "failed", "seconds": 41.2,
     "images": {"postgres": {"state": "pending" | "loaded" | "present" | "refused",
                             "seconds": 12.5, "error": "..."},
                "immich-ml": {"state": "to pull", "from": "ghcr.io/…@sha256:…"}, ...},
     "pruned": ["memu/postgres:0.1.0", ...]}

A registry image the slot does not carry (lock entry without archive) is left to the pull
when the box is online: reported "to pull", not loaded, not a failure here.

Exit status 0 when every image the slot carries is in Docker, 1 when one was refused or the
lock file is unreadable (the unit fails, so ``systemctl --failed`` shows it; the stack starts
anyway).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from memu_agent.facts import HostPaths, os_version
from memu_agent.progress import StatusFile
from memu_common import MemuError, run
from memu_common import container_lock as lock
from memu_common.files import read_json_object, write_atomic, write_json_atomic
from memu_common.run import run_feeding

log = logging.getLogger("memu_agent.preload")

IMAGES_DIR = Path("/usr/share/memu/containers")
BOOTED_RECORD = Path("/var/lib/memu/containers/booted.json")
STATUS_FILE = HostPaths().preload_status
#: The image ID of every image that is in Docker, for the Compose project (compose.yaml).
IMAGES_ENV = Path("/run/memu-stack/images.env")
#: How many OS versions' images are kept: the booted slot's and the other slot's.
KEEP_VERSIONS = 2


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do with one slot's lock: ``load`` (archive into Docker), ``tag`` (present
    already: set its tag only), ``ready`` (present and tagged: nothing, as on a warm boot);
    each keeps the lock's order."""

    load: tuple[lock.LockEntry, ...]
    tag: tuple[lock.LockEntry, ...]
    ready: tuple[lock.LockEntry, ...] = ()


def plan(entries: Sequence[lock.LockEntry], present_ids: Iterable[str],
         tagged: Iterable[tuple[str, str]] = ()) -> Plan:
    """Split ``entries`` into those Docker lacks (by image ID), those it has without their
    tag, and those it has with it.

    Args:
        entries: the booted slot's lock entries.
        present_ids: the image IDs (``sha256:<hex>``) Docker has now.
        tagged: (image ID, ``repository:tag``) of Docker's tagged images now.
    """
    have, named = set(present_ids), set(tagged)
    present = [e for e in entries if e.image_id in have]
    ready = tuple(e for e in present if (e.image_id, shown_ref(e.ref)) in named)
    return Plan(load=tuple(e for e in entries if e.image_id not in have),
                tag=tuple(e for e in present if e not in ready), ready=ready)


def image_env_name(name: str) -> str:
    """The variable compose.yaml reads an image's ID from: ``MEMU_IMAGE_POSTGRES``."""
    return "MEMU_IMAGE_" + name.upper().replace("-", "_")


def repository(ref: str) -> str:
    """``memu/postgres`` of ``memu/postgres:0.1.0`` (a registry port's colon is kept)."""
    name, sep, tag = ref.rpartition(":")
    return name if sep and "/" not in tag else ref


def shown_ref(ref: str) -> str:
    """``ref`` as ``docker image ls`` shows it: Docker Hub's ``docker.io/`` (and
    ``library/``) dropped, ``docker.io/tailscale/tailscale:v1`` → ``tailscale/tailscale:v1``;
    other references unchanged."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def unneeded(present: Iterable[tuple[str, str]], needed_ids: Iterable[str],
             repositories: Iterable[str]) -> list[str]:
    """The tags to remove: tags of our repositories whose image no OS slot needs.

    Args:
        present: (image ID, ``repository:tag``) of every tagged image Docker has.
        needed_ids: the image IDs named by the locks of both OS slots (a rollback must find
            the old slot's images).
        repositories: the repositories the stack's images use (``memu/postgres``, …); images
            of other repositories are never touched.
    """
    keep, ours = set(needed_ids), {shown_ref(r) for r in repositories}
    return sorted({ref for image_id, ref in present
                   if repository(ref) in ours and image_id not in keep})


def unneeded_pulled(present: Iterable[tuple[str, str]], needed: Iterable[str],
                    repositories: Iterable[str]) -> list[str]:
    """The pulled references to remove: ``repository@digest`` of our pulled repositories
    that no OS slot's lock names (an update moved that service to another digest).

    Args:
        present: (image ID, ``repository@sha256:…``) of every image Docker has by digest.
        needed: the pulled references (lock ``origin``) of both OS slots.
        repositories: the repositories the stack pulls from; others are never touched.
    """
    keep, ours = {shown_ref(n) for n in needed}, {shown_ref(r) for r in repositories}
    return sorted({ref for _, ref in present
                   if ref.rpartition("@")[0] in ours and ref not in keep})


def remember(record: list[dict[str, Any]], version: str, image_ids: Sequence[str],
             repositories: Sequence[str], pulled: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The booted-versions record after booting ``version``: it first, then the other
    versions booted before it, newest first, ``KEEP_VERSIONS`` in all.

    Args:
        record: ``[{"version": str, "image_ids": [str, ...], "repositories": [str, ...],
            "pulled": [str, ...]}, ...]``, newest first (entries of another shape are
            dropped; "pulled" is missing in records of older versions and means none).
        version: the OS version that booted now.
        image_ids: the image IDs its lock names.
        repositories: the repositories of its lock's images.
        pulled: the ``repository@digest`` of its lock's images the device pulls.
    """
    older = [r for r in record if isinstance(r, dict) and isinstance(r.get("version"), str)
             and isinstance(r.get("image_ids"), list)
             and isinstance(r.get("repositories"), list) and r["version"] != version]
    new = {"version": version, "image_ids": list(image_ids),
           "repositories": list(repositories), "pulled": list(pulled)}
    return [new, *older][:KEEP_VERSIONS]


class Docker:
    """The few Docker CLI calls the preload makes (``docker`` on ``$PATH``, the default
    engine socket, or ``host`` as ``docker -H``)."""

    def __init__(self, host: str | None = None) -> None:
        self._base = ["docker", *(["-H", host] if host else [])]

    def _run(self, *args: str, timeout: float = 120) -> str:
        return run([*self._base, *args], timeout=timeout,
                   hint="is docker.service running?").stdout

    def _listing(self, *args: str, name: str) -> list[tuple[str, str]]:
        """(image ID, ``name`` rendered) per line of ``docker image ls <args>``."""
        out = self._run("image", "ls", *args, "--no-trunc", "--format", "{{.ID}} " + name)
        return [(i, r) for i, _, r in (line.partition(" ") for line in out.splitlines())
                if r]

    def images(self) -> list[tuple[str, str]]:
        """(image ID, ``repository:tag``) of every image, ``<none>:<none>`` when untagged
        (one ``docker image ls --all``)."""
        return self._listing("--all", name="{{.Repository}}:{{.Tag}}")

    def tagged(self) -> list[tuple[str, str]]:
        """(image ID, ``repository:tag``) of every tagged image."""
        return tagged_only(self.images())

    def digested(self) -> list[tuple[str, str]]:
        """(image ID, ``repository@sha256:…``) of every image Docker has by digest (pulled
        from a registry)."""
        return [(i, r) for i, r in self._listing("--digests",
                                                 name="{{.Repository}}@{{.Digest}}")
                if not r.endswith("@<none>")]

    def load(self, chunks: Iterable[bytes], timeout: float = 1800) -> None:
        """``docker load`` of a docker-archive streamed as ``chunks``.

        Raises:
            MemuError: Docker refused the archive (e.g. a layer's digest does not match).
        """
        run_feeding([*self._base, "load", "--quiet"], chunks, timeout=timeout)

    def image_id(self, ref: str) -> str | None:
        """The image ID ``ref`` names, or None when there is no such image."""
        proc = run([*self._base, "image", "inspect", "--format", "{{.Id}}", ref],
                   check=False, timeout=60)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def tag(self, image_id: str, ref: str) -> None:
        """Point ``ref`` at ``image_id``."""
        self._run("tag", image_id, ref)

    def untag(self, ref: str) -> bool:
        """Remove the tag ``ref`` (the image goes with its last tag, unless a container uses
        it); False when Docker refuses."""
        proc = run([*self._base, "image", "rm", ref], check=False, timeout=120)
        if proc.returncode != 0:
            log.warning("cannot remove %s: %s", ref, proc.stderr.strip())
        return proc.returncode == 0


def tagged_only(images: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (image ID, ``repository:tag``) pairs of ``images`` that have a tag."""
    return [(i, r) for i, r in images if not r.endswith(":<none>")]


def _chunks(path: Path, digest: Any, counter: list[int], size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(size):
            digest.update(block)
            counter[0] += len(block)
            yield block


def load_verified(docker: Docker, directory: Path, entry: lock.LockEntry) -> None:
    """Load ``entry``'s archive into Docker and keep it only if it is what the lock says.

    Raises:
        MemuError: the archive is missing, Docker refused it, or its size, SHA-256 or image
            ID differ from the lock (the loaded image is removed again).
    """
    path = directory / entry.archive
    if not path.is_file():
        raise MemuError(f"{entry.name}: archive {path} is missing")
    digest, counter = hashlib.sha256(), [0]
    try:
        docker.load(_chunks(path, digest, counter))
    except MemuError as e:
        raise MemuError(f"{entry.name}: refused: Docker could not load {path}: {e.message}",
                        hint="the OS image is damaged: reinstall the update or reflash") from e
    got_sha = f"sha256:{digest.hexdigest()}"
    got_id = docker.image_id(entry.ref)
    problem = None
    if counter[0] != entry.archive_bytes:
        problem = f"{path} has {counter[0]} bytes, the lock file says {entry.archive_bytes}"
    elif got_sha != entry.archive_sha256:
        problem = f"{path} has digest {got_sha}, the lock file says {entry.archive_sha256}"
    elif got_id != entry.image_id:
        problem = f"{entry.ref} loaded as image {got_id}, the lock file says {entry.image_id}"
    if problem:
        if got_id is not None:
            docker.untag(entry.ref)
        raise MemuError(f"{entry.name}: refused: {problem}",
                        hint="the OS image is damaged: reinstall the update or reflash")


@dataclasses.dataclass
class Preload:
    """One preload run; :meth:`run` does the work, :attr:`status` is what it reports."""

    docker: Docker
    directory: Path = IMAGES_DIR
    record_path: Path = BOOTED_RECORD
    status_path: Path = STATUS_FILE
    version: str = "unknown"
    images_env: Path = IMAGES_ENV
    clock: Callable[[], float] = time.monotonic
    status: dict[str, Any] = dataclasses.field(default_factory=dict)

    def _report(self) -> None:
        """Write :attr:`status` now (never raises: a full disk must not stop the stack)."""
        StatusFile(self.status_path, clock=self.clock).write(self.status)

    def run(self) -> bool:
        """Load, tag and prune as the module docstring says; True when every image of the
        lock is in Docker with its recorded ID.

        Raises:
            MemuError: the lock file is unreadable or Docker does not answer.
        """
        start = self.clock()
        self.status = {"version": self.version, "state": "running", "images": {},
                       "pruned": []}
        try:
            ok = self._load_and_prune(lock.read(self.directory))
        except MemuError as e:
            self.status.update(state="failed", error=str(e),
                               seconds=round(self.clock() - start, 1))
            self._report()
            raise
        self.status.update(state="done" if ok else "failed",
                           seconds=round(self.clock() - start, 1))
        self._report()
        return ok

    def _load_and_prune(self, all_entries: Sequence[lock.LockEntry]) -> bool:
        images: dict[str, dict[str, Any]] = self.status["images"]
        for e in all_entries:
            # A registry image the slot does not carry is pulled by digest when the box is
            # online (the lock's "origin"); until then its services wait.
            images[e.name] = {"state": "pending"} if e.in_slot else {
                "state": "to pull", "from": e.origin}
        entries = [e for e in all_entries if e.in_slot]
        listing = self.docker.images()
        todo = plan(entries, {i for i, _ in listing}, tagged_only(listing))
        for e in todo.tag:
            self.docker.tag(e.image_id, e.ref)
        for e in (*todo.ready, *todo.tag):
            images[e.name] = {"state": "present", "seconds": 0.0}
        self._report()
        for e in todo.load:
            t0 = self.clock()
            try:
                load_verified(self.docker, self.directory, e)
            except MemuError as err:
                log.error("%s", err)
                images[e.name] = {"state": "refused", "error": str(err),
                                  "seconds": round(self.clock() - t0, 1)}
            else:
                images[e.name] = {"state": "loaded", "seconds": round(self.clock() - t0, 1)}
                log.info("loaded %s in %.1f s", e.ref, self.clock() - t0)
            self._report()
        before = self._read_record()
        record = remember(before, self.version, [e.image_id for e in entries],
                          sorted({repository(e.ref) for e in entries}),
                          [e.origin for e in all_entries if not e.in_slot])
        try:
            write_json_atomic(self.record_path, {"booted": record}, mode=0o644)
        except OSError as err:
            log.error("cannot write %s: %s", self.record_path, err)
        needed = {i for r in record for i in r["image_ids"]}
        ours = {repo for r in before + record for repo in r.get("repositories", [])}
        # A warm boot changed nothing, so the first listing still holds: the stack waits for
        # this unit, and each Docker call is a fraction of a second on a small CPU.
        present = tagged_only(listing) if not (todo.tag or todo.load) else self.docker.tagged()
        for ref in unneeded(present, needed, ours):
            if self.docker.untag(ref):
                self.status["pruned"].append(ref)
        pulled = {o for r in record for o in r.get("pulled", [])}
        pulled_repos = {o.rpartition("@")[0] for r in before + record
                        for o in r.get("pulled", [])}
        for ref in unneeded_pulled(self.docker.digested(), pulled, pulled_repos):
            if self.docker.untag(ref):
                self.status["pruned"].append(ref)
        self._write_images_env(entries)
        return all(images[e.name]["state"] in ("loaded", "present") for e in entries)

    def _write_images_env(self, entries: Sequence[lock.LockEntry]) -> None:
        ok = [e for e in entries if self.status["images"][e.name]["state"] in ("loaded",
                                                                              "present")]
        text = "".join(f"{image_env_name(e.name)}={e.image_id}\n" for e in ok)
        try:
            write_atomic(self.images_env, text.encode(), mode=0o644, dir_mode=0o755)
        except OSError as err:
            log.error("cannot write %s: %s", self.images_env, err)

    def _read_record(self) -> list[dict[str, Any]]:
        data = read_json_object(self.record_path) or {}
        booted = data.get("booted")
        return booted if isinstance(booted, list) else []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 0 (every image in Docker) or 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="memu-preload", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=IMAGES_DIR)
    parser.add_argument("--record", type=Path, default=BOOTED_RECORD)
    parser.add_argument("--status", type=Path, default=STATUS_FILE)
    parser.add_argument("--images-env", type=Path, default=IMAGES_ENV)
    parser.add_argument("--docker-host", default=None)
    parser.add_argument("--version", default=None, help="default: IMAGE_VERSION of os-release")
    args = parser.parse_args(argv)
    preload = Preload(Docker(args.docker_host), args.images, args.record, args.status,
                      args.version or os_version(HostPaths()), args.images_env)
    try:
        ok = preload.run()
    except MemuError as e:
        log.error("%s", e)
        return 1
    log.info("preload %s in %.1f s: %s", preload.status["state"], preload.status["seconds"],
             ", ".join(f"{k} {v['state']}" for k, v in preload.status["images"].items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
