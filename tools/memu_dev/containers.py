"""Build the stack's container images and stage them for the OS image: `just build-intelligence`.

    python -m memu_dev.containers [BOARD] [--force] [NAME ...]     (BOARD: n100 (default), pi5)

For every image declared in ``image/containers.toml`` that is built here:

1. ``mkosi -C <project> build`` (``Format=oci``) when the project or the code it installs
   changed, with the OS build's tools tree (``ToolsTree=`` in the project);
2. the declared image config (user, entrypoint, env, labels, Docker health check) is merged
   into mkosi's OCI config, which sets only ``Cmd`` (mkosi 25.3 has no OCI config settings);
3. ``skopeo copy oci:… docker-archive:…:<repository>:<version>`` turns the OCI layout into a
   docker-archive, the format Docker 26's default (non-containerd) image store loads: its
   ``docker load`` requires a ``manifest.json`` and does not read an OCI layout;
4. the archive and ``containers.lock.json`` (``memu_common.container_lock``) are written to
   the architecture's tree, ``mkosi.output/containers/tree-<arch>/`` (:func:`tree`), which
   ``mkosi.conf.d/40-containers.conf`` copies to ``/usr/share/memu/containers/`` in the OS
   image. One tree per architecture: building for a Pi 5 leaves the N100's archives alone.

Registry images (``tag`` and ``digest =``) are never pulled by tag. ``where = "slot"`` (small
ones) are copied into the slot with ``skopeo copy docker://<repository>@<digest>``: skopeo
fetches the manifest by its digest and checks every blob it names against its digest, so
what lands is exactly what was pinned. A digest the registry does not have fails the build
(the pin is wrong). A registry that cannot be reached does not: the build logs which images
are missing and writes their lock entries without an archive, and the device pulls them by
digest when it is online. ``where = "store"`` images (several GB: Immich, Ollama) never go
into the slot; the device always pulls them into Docker's store on the writable partition.

``memu_dev.build`` runs this before every OS build.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memu_common import MemuError, boards, run
from memu_common import container_lock as lock
from memu_common.files import write_atomic
from memu_dev import wheelhouse
from memu_dev.oci import archive_image_id, configure_layout
from memu_dev.paths import DEFAULT_BOARD, OUTPUT, REPO, mkosi_cmd, version

log = logging.getLogger("memu.containers")

DECLARATION = REPO / "image/containers.toml"
CONTAINERS_OUT = OUTPUT / "containers"


def tree(arch: str) -> Path:
    """The directory of ``arch``'s (mkosi's name: ``x86-64``, ``arm64``) archives and lock
    file, copied into the OS image as /usr/share/memu/containers
    (mkosi.conf.d/40-containers.conf names it with mkosi's ``%a``)."""
    return CONTAINERS_OUT / f"tree-{arch}"


#: The N100's tree (x86-64, this host's architecture: what the host stack tests load).
TREE = tree(boards.get(boards.DEFAULT_BOARD).arch)
TOOLS_TREE = OUTPUT / "tools"
#: What every built image's content depends on besides its project and declared ``sources``.
COMMON_INPUTS = ("image/sandbox",)
#: mkosi architecture -> OCI/Docker platform architecture.
OCI_ARCH = {"x86-64": "amd64", "arm64": "arm64"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEALTH_KEYS = {"test", "interval_s", "timeout_s", "start_period_s", "start_interval_s",
                "retries"}
#: Where a registry image lives: in the OS slot, or pulled into Docker's store on the device.
WHERE = ("slot", "store")
#: skopeo's words (on its final error line) for "the registry was not reached" (Go's net
#: errors) or "not now" (rate limits, a registry down), as opposed to a registry that answered
#: and does not have the pinned digest.
_UNREACHABLE = re.compile(r"no such host|connection refused|i/o timeout|network is unreachable"
                          r"|TLS handshake timeout|server misbehaving|dial tcp"
                          r"|toomanyrequests|429 Too Many|50[234] ")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """One ``[[image]]`` of image/containers.toml.

    ``build`` (a mkosi project, relative to the repository) for images built here; ``tag``,
    ``digest`` (``sha256:<hex>``) and ``where`` (:data:`WHERE`) for registry images.
    ``config`` holds OCI image config fields (``User``, ``Entrypoint``, …); ``healthcheck``
    the ``test`` argv and its timing.
    ``sources``: repository paths the build reads besides its project (a change to one makes
    the image stale), e.g. the Python packages the bot's wheel is built from.
    """

    name: str
    repository: str
    build: str | None = None
    tag: str | None = None
    digest: str | None = None
    where: str | None = None
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    healthcheck: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def ref(self, os_version: str) -> str:
        """The tag ``docker load`` creates: built images carry the OS version."""
        return f"{self.repository}:{self.tag or os_version}"


def parse_declaration(text: str) -> list[ImageSpec]:
    """The images declared in image/containers.toml's text, validated.

    Raises:
        MemuError: not TOML, or an entry is malformed (the message names it and why).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MemuError(f"image/containers.toml: {e}") from e
    specs: list[ImageSpec] = []
    for raw in data.get("image", []):
        name = raw.get("name", "?")

        def bad(why: str, name: str = name) -> MemuError:
            return MemuError(f"image/containers.toml: image {name!r}: {why}")

        unknown = set(raw) - {f.name for f in dataclasses.fields(ImageSpec)}
        if unknown:
            raise bad(f"unknown keys {sorted(unknown)}")
        if not _NAME.match(str(name)):
            raise bad("name must be lower-case letters, digits and dashes")
        if not raw.get("repository"):
            raise bad("repository is missing")
        if ("build" in raw) == ("digest" in raw):
            raise bad("give either build (built here) or digest (copied from a registry)")
        if "digest" in raw and (not _DIGEST.match(raw["digest"]) or not raw.get("tag")):
            raise bad("a registry image needs tag and digest = 'sha256:<64 hex digits>'")
        if "build" in raw and ("tag" in raw or "where" in raw):
            raise bad("a built image is tagged with the OS version and lives in the slot; "
                      "drop tag and where")
        if "digest" in raw and raw.get("where") not in WHERE:
            raise bad(f"a registry image needs where = one of {', '.join(WHERE)}")
        sources = raw.get("sources", [])
        if not isinstance(sources, list) or not all(
                isinstance(x, str) and (REPO / x).exists() for x in sources):
            raise bad("sources lists paths in the repository")
        raw = {**raw, "sources": tuple(sources)}
        health = raw.get("healthcheck", {})
        if health and (set(health) != _HEALTH_KEYS or not health["test"]):
            raise bad(f"healthcheck needs exactly {sorted(_HEALTH_KEYS)}")
        spec = ImageSpec(**raw)
        if any(s.name == spec.name for s in specs):
            raise bad("declared twice")
        specs.append(spec)
    return specs


def docker_healthcheck(health: Mapping[str, Any]) -> dict[str, Any]:
    """Docker's ``Healthcheck`` object (durations in nanoseconds) from a ``healthcheck`` table.

    Docker reads it from the image config like ``HEALTHCHECK CMD …`` in a Dockerfile; it is an
    extension of the OCI config, which has no health check.
    """
    ns = 1_000_000_000
    return {
        "Test": ["CMD", *health["test"]],
        "Interval": int(health["interval_s"] * ns),
        "Timeout": int(health["timeout_s"] * ns),
        "StartPeriod": int(health["start_period_s"] * ns),
        "StartInterval": int(health["start_interval_s"] * ns),
        "Retries": int(health["retries"]),
    }


def newest_mtime(paths: Iterable[Path]) -> float:
    """The newest modification time (seconds since the epoch) of files under ``paths``."""
    newest = 0.0
    for p in paths:
        files = [p] if p.is_file() else (f for f in p.rglob("*") if f.is_file())
        for f in files:
            if "__pycache__" in f.parts or ".egg-info" in str(f):
                continue
            newest = max(newest, f.stat().st_mtime)
    return newest


def ensure_host(board: str) -> None:
    """mkosi, the OS build's tools tree and skopeo, installed or found. Idempotent.

    Raises:
        MemuError: not root, or a set-up step failed.
    """
    if os.geteuid() != 0:
        raise MemuError("building container images needs root on this host",
                        hint="run `sudo just build-intelligence`")
    run(["bash", str(REPO / "tools/setup-mkosi.sh")], capture=False,
        hint="is deb.debian.org reachable?")
    if not (TOOLS_TREE / "usr/bin").is_dir():
        log.info("memu: building mkosi's tools tree first (once, ~4 min)")
        # No "--" before the command: with options before the verb, mkosi 25.3 passes a
        # "--" through as the command's first word (exit 127).
        run([*mkosi_cmd(), f"--profile={board}", "-f", "sandbox", "true"], cwd=REPO,
            capture=False, hint="is deb.debian.org reachable?")
    if shutil.which("skopeo") is None:
        log.info("memu: installing skopeo (turns OCI layouts into docker-archives)")
        run(["apt-get", "install", "-y", "--no-install-recommends", "skopeo"], capture=False,
            hint="run `apt-get update` and retry")


def build_image(spec: ImageSpec, arch: str, *, force: bool = False) -> lock.LockEntry:
    """Build one image declared with ``build =`` and return its lock entry.

    The archive lands in ``arch``'s :func:`tree`; steps are skipped when their outputs are newer
    than their inputs (unless ``force``).

    Raises:
        MemuError: mkosi or skopeo failed, or the archive does not carry the built config.
    """
    assert spec.build is not None
    project = REPO / spec.build
    ver = version()
    layout = CONTAINERS_OUT / f"memu-{spec.name}_{ver}_{arch}"
    archive = tree(arch) / f"{layout.name}.tar"
    inputs = [project, *(REPO / p for p in (*COMMON_INPUTS, *spec.sources))]
    if force or not (layout / "index.json").exists() or \
            (layout / "index.json").stat().st_mtime < newest_mtime(inputs):
        pins = project / "requirements.txt"
        if pins.exists():  # PyPI packages, hash-pinned: fetched here, installed offline
            wheelhouse.fetch(pins, spec.name, arch)
        log.info("memu: building the %s container image for %s with mkosi (x86-64: ~1.5 min, "
                 "arm64 through binfmt: several times that)", spec.name, arch)
        t0 = time.monotonic()
        run([*mkosi_cmd(), "-C", project, f"--architecture={arch}", "-f", "build"],
            cwd=project, capture=False, hint="is `just build` (tools tree) done?")
        log.info("memu: mkosi built %s in %.0f s", layout.name, time.monotonic() - t0)
        archive.unlink(missing_ok=True)
    ref = spec.ref(ver)
    labels = {"org.opencontainers.image.version": ver}
    config = dict(spec.config)
    if spec.healthcheck:
        config["Healthcheck"] = docker_healthcheck(spec.healthcheck)
    digests = configure_layout(layout, config, labels=labels, ref=ref)
    if force or not archive.exists() or archive.stat().st_mtime < max(
            (layout / "index.json").stat().st_mtime, DECLARATION.stat().st_mtime):
        tmp = archive.with_name(f".{archive.name}.tmp")
        tmp.unlink(missing_ok=True)
        run(["skopeo", "copy", "--quiet", f"oci:{layout}", f"docker-archive:{tmp}:{ref}"],
            hint="is skopeo installed (apt-get install skopeo)?")
        tmp.replace(archive)
    image_id, tags = archive_image_id(archive)
    if image_id != digests.image_id or ref not in {t.removeprefix("docker.io/") for t in tags}:
        raise MemuError(f"{archive} carries {image_id} {tags}, built {digests.image_id} {ref}",
                        hint="run `just build-intelligence --force`")
    log.info("memu: %s -> %s (%s, %.0f MB)", ref, archive.name, image_id[:19],
             archive.stat().st_size / 1e6)
    return lock.LockEntry(
        name=spec.name, ref=ref, source="built", origin=spec.build,
        platform=f"linux/{OCI_ARCH[arch]}", image_id=digests.image_id,
        manifest_digest=digests.manifest_digest, archive=archive.name,
        archive_sha256=lock.sha256_file(archive), archive_bytes=archive.stat().st_size,
        healthcheck=tuple(spec.healthcheck.get("test", ())))


def copy_registry_image(spec: ImageSpec, arch: str, directory: Path | None = None, *,
                        tls_verify: bool = True) -> lock.LockEntry:
    """Copy a registry image by its pinned digest into ``directory`` (default: ``arch``'s
    :func:`tree`) as a docker-archive and return its lock entry; or, for ``where = "store"``
    and for a registry that cannot be reached, the lock entry of an image the device pulls
    (no archive). An archive already there (its name carries the digest) is reused.

    Args:
        tls_verify: False only for a test registry on loopback (plain HTTP).

    Raises:
        MemuError: the registry answered but the copy failed: the digest is not in the
            repository, or a blob did not match its digest.
    """
    assert spec.digest is not None and spec.tag is not None
    pinned = f"{spec.repository}@{spec.digest}"
    entry = lock.to_pull(spec.name, spec.ref(""), pinned, f"linux/{OCI_ARCH[arch]}",
                         tuple(spec.healthcheck.get("test", ())))
    if spec.where == "store":
        return entry
    archive = (directory or tree(arch)) / f"{spec.name}_{spec.digest[7:19]}_{arch}.tar"
    if not archive.exists():
        tmp = archive.with_name(f".{archive.name}.tmp")
        tmp.unlink(missing_ok=True)
        log.info("memu: copying %s by digest", pinned)
        proc = run(["skopeo", "copy", "--quiet", "--retry-times=2", "--override-os=linux",
                    f"--override-arch={OCI_ARCH[arch]}",
                    f"--src-tls-verify={str(tls_verify).lower()}",
                    f"docker://{pinned}", f"docker-archive:{tmp}:{entry.ref}"],
                   check=False, timeout=3600)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            why = (proc.stderr or "").strip().splitlines()[-1:] or ["(no message)"]
            if _UNREACHABLE.search(why[0]):
                log.warning("memu: %s: %s is not reachable (%s); the image is not in the slot "
                            "and the device pulls it by digest when it is online",
                            spec.name, spec.repository.split("/")[0], why[0])
                return entry
            raise MemuError(f"{spec.name}: copying {pinned} failed: {why[0]}",
                            hint="the digest in image/containers.toml must be one the "
                                 "repository has (`skopeo inspect --raw docker://"
                                 f"{spec.repository}:{spec.tag} | sha256sum` shows the tag's)")
        tmp.replace(archive)
    image_id, _ = archive_image_id(archive)
    log.info("memu: %s -> %s (%s, %.0f MB)", pinned, archive.name, image_id[:19],
             archive.stat().st_size / 1e6)
    return dataclasses.replace(entry, image_id=image_id, archive=archive.name,
                               archive_sha256=lock.sha256_file(archive),
                               archive_bytes=archive.stat().st_size)


def build_all(board: str, names: Sequence[str] = (), *, force: bool = False) -> Path:
    """Build the declared images (all, or those in ``names``) and write the lock files.

    Leaves the :func:`tree` of the board's architecture holding exactly the archives its lock
    file lists (another architecture's tree is left alone). With ``names``, the other images'
    entries are kept from the previous lock file when their archives are still there.

    Returns:
        The OS image's lock file's path (in that tree).

    Raises:
        MemuError: an unknown name, a build failed, or a registry refused a pinned digest.
    """
    specs = parse_declaration(DECLARATION.read_text())
    unknown = set(names) - {s.name for s in specs}
    if unknown:
        raise MemuError(f"no image named {sorted(unknown)} in image/containers.toml",
                        hint=f"declared: {', '.join(s.name for s in specs)}")
    ensure_host(board)
    arch = boards.get(board).arch
    out = tree(arch)
    out.mkdir(parents=True, exist_ok=True)
    previous = ({e.name: e for e in lock.read(out)}
                if (out / lock.LOCK_NAME).exists() else {})
    listed: list[lock.LockEntry] = []
    for spec in specs:
        kept = previous.get(spec.name)
        if names and spec.name not in names and kept is not None \
                and (out / kept.archive).exists():
            listed.append(kept)
        elif spec.build is None:
            listed.append(copy_registry_image(spec, arch))
        else:
            listed.append(build_image(spec, arch, force=force))
    missing = [e.name for e in listed if not e.in_slot]
    if missing:
        log.warning("memu: not in the slot, pulled by digest on the device: %s",
                    ", ".join(missing))
    keep = {e.archive for e in listed if e.in_slot} | {lock.LOCK_NAME}
    for stale in out.iterdir():
        if stale.name not in keep:
            stale.unlink()
    write_atomic(out / lock.LOCK_NAME, lock.dumps(listed).encode(), mode=0o644,
                 dir_mode=0o755)
    return out / lock.LOCK_NAME


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 with a message and hint on failure)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("board", nargs="?", default=DEFAULT_BOARD, choices=sorted(boards.BOARDS),
                    help=f"whose architecture to build for (default {DEFAULT_BOARD})")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("names", nargs="*", help="images to build (default: all)")
    args = ap.parse_args(argv)
    try:
        path = build_all(args.board, args.names, force=args.force)
    except MemuError as e:
        print(f"memu: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"memu: hint: {e.hint}", file=sys.stderr)
        return 1
    log.info("memu: container lock file %s", path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
