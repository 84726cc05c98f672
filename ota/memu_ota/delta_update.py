"""Install a version by delta: rebuild its artifacts from the running slot plus the changed
blocks (:mod:`memu_ota.delta`), then let systemd-sysupdate install them from that local
channel with the image's own transfers (:func:`memu_ota.definitions.render_local`).

The rebuild reads the running slot's block devices, which the agent's sandbox hides
(``PrivateDevices=yes``), so it runs as its own command, ``python3 -m
memu_ota.delta_update``, in a transient unit as sysupdate does (``[ota] isolate``); it
prints what it made as one JSON object.

The updater tries this first and downloads the whole update as before when it returns None:
delta off by setting (``[ota] delta = false``), an architecture without artifacts, a
channel without delta material, a damaged block or index, no room on ``/var``, or a failed
local install. What went wrong is logged; the full download needs none of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import resource
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memu_common import MemuError, osrelease
from memu_common.run import run_async
from memu_ota import definitions, delta
from memu_ota.boot import BootBackend
from memu_ota.config import OtaConfig
from memu_ota.sysupdate import Progress, Sysupdate, transient

log = logging.getLogger(__name__)

UNIT = "memu-delta"
#: Seconds the rebuild may take (indexing the running slot, then the fetch).
REBUILD_TIMEOUT_S = 3 * 3600.0


def workdir(config: OtaConfig) -> Path:
    """Where a delta update rebuilds artifacts (persistent, so a cut-off one resumes)."""
    return config.state_dir / "delta"


def discard(config: OtaConfig) -> None:
    """Remove what a delta update left; the updater calls it after every successful
    install, by delta or in full."""
    shutil.rmtree(workdir(config), ignore_errors=True)


def command(config: OtaConfig, boot: BootBackend, running: str, version: str) -> list[str]:
    """The rebuild's command line (in a transient unit when ``config.isolate``); the boot
    chain names the running version's boot artifact (a source of blocks too)."""
    artifact = boot.boot_artifact(running)
    argv = [sys.executable, "-m", "memu_ota.delta_update",
            "--channel-url", definitions.source_url(config.base_url, config.channel),
            "--running", running, "--version", version, "--dest", str(workdir(config)),
            "--keyring", str(config.keyring), "--image-name", config.image_name,
            *([f"--boot-artifact={artifact}"] if artifact else [])]
    return transient(argv, UNIT) if config.isolate else argv


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One try at installing ``version`` by delta: installed from ``prepared`` (which cost
    ``memory`` bytes of peak resident memory in the rebuild), or not, for ``fallback`` (the
    reason, in words; the update is then downloaded whole)."""

    version: str
    prepared: delta.Prepared | None = None
    memory: int = 0
    fallback: str | None = None

    def report(self) -> dict[str, Any]:
        """The status API's ``update.delta``: ``{version, fetched, size, memory}`` (bytes;
        ``size`` is what the rebuilt artifacts took on ``/var``) or ``{version,
        fallback}``."""
        if self.prepared is None:
            return {"version": self.version, "fallback": self.fallback}
        return {"version": self.version, "fetched": self.prepared.fetched,
                "size": self.prepared.size, "memory": self.memory}


async def install(config: OtaConfig, boot: BootBackend, running: str, version: str,
                  on_progress: Callable[[Progress], None]) -> Attempt | None:
    """Install ``version`` by delta; return what it cost or why it could not be done (then
    also logged, and the caller downloads the update whole), or None when delta updates are
    off by setting. Never raises :class:`MemuError`."""
    if not config.delta:
        return None
    try:
        done = await run_async(command(config, boot, running, version),
                               time_limit_s=REBUILD_TIMEOUT_S)
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()
            raise MemuError(said[-1].removeprefix("delta: ") if said
                            else f"exit status {done.returncode}")
        made = json.loads(done.stdout)
        prepared = delta.Prepared(Path(made["directory"]), int(made["fetched"]),
                                  int(made["size"]))
        local = config.runtime_dir / "sysupdate-delta.d"
        definitions.render_local(config.template_dir, local, prepared.directory,
                                 config.boot_tries, config.image_name)
        await Sysupdate(config, local).update(version, on_progress)
    except (MemuError, ValueError, KeyError) as e:
        why = e.message if isinstance(e, MemuError) else f"bad report: {e}"
        log.warning("delta update to %s not possible (%s); downloading it whole", version, why)
        return Attempt(version, fallback=why)
    log.info("delta update to %s: %d bytes downloaded for %d bytes of artifacts (%.1f %%)",
             version, prepared.fetched, prepared.size,
             100.0 * prepared.fetched / max(prepared.size, 1))
    return Attempt(version, prepared, memory=int(made.get("memory", 0)))


def main(argv: list[str] | None = None) -> int:
    """``python3 -m memu_ota.delta_update``: rebuild a version into a local channel; print
    ``{"directory", "fetched", "size", "memory"}`` as JSON (``memory``: the peak resident
    set in bytes, getrusage(2)). Exit status 1 with the reason on stderr
    when it cannot."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    ap = argparse.ArgumentParser(prog="memu-delta", description=main.__doc__)
    ap.add_argument("--channel-url", required=True)
    ap.add_argument("--running", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--dest", type=Path, required=True)
    ap.add_argument("--keyring", type=Path, default=delta.KEYRING)
    ap.add_argument("--boot-artifact", type=Path)
    ap.add_argument("--image-name", default=osrelease.IMAGE_ID)
    args = ap.parse_args(argv)
    arch = delta.ARCH.get(platform.machine())
    try:
        if arch is None:
            raise MemuError(f"no artifacts for {platform.machine()}")
        sources = delta.running_sources(args.boot_artifact)
        log.info("delta: sources %s", ", ".join(map(str, sources)) or "none")
        got = delta.prepare(delta.Http(), args.channel_url, args.version, arch, sources,
                            args.dest, args.keyring, args.image_name)
    except MemuError as e:
        print(f"delta: {e.message}", file=sys.stderr)
        return 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"directory": str(got.directory), "fetched": got.fetched,
                      "size": got.size, "memory": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
