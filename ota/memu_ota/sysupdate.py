"""Drive ``systemd-sysupdate`` (systemd 257) and explain its failures to a person.

Verbs used (systemd-sysupdate(8)), always with ``--definitions=<runtime>/sysupdate.d``:

* ``list --json=short`` → ``{"current": "0.1.0", "all": ["0.2.0", "0.1.0"], …}``: every
  version that is installed or offered complete by the channel (a version missing one of
  its transfers is not listed at all), newest first.
* ``list VERSION --json=short`` → ``{"version", "newest", "available", "installed",
  "obsolete", "protected", "incomplete", …}`` (booleans).
* ``check-new`` → prints the newest available version and exits 0 when it is newer than
  the newest installed one; exits 1 with nothing on stdout otherwise.
* ``update VERSION`` → downloads, verifies and installs; exit 0 on success.

sysupdate speaks sd_notify to ``$NOTIFY_SOCKET`` (src/sysupdate/sysupdate.c):
``READY=1`` + ``X_SYSUPDATE_VERSION=<v>`` when it picked a version,
``X_SYSUPDATE_PROGRESS=<0-100>`` (+ ``X_SYSUPDATE_TRANSFERS_LEFT/DONE``, ``STATUS=``) while
downloading, ``ERRNO=<n>`` when it fails, ``EXIT_STATUS=<n>`` at exit. A failure always
sends ``ERRNO=``; that is how "check-new found nothing" (exit 1, no ``ERRNO``) is told
apart from a failed check.

On the device sysupdate runs in a transient unit (``systemd-run --wait --pipe``), so it
gets root and device access while the agent keeps its tight sandbox, its log lands in the
journal under ``memu-sysupdate.service``, and systemd refuses a second concurrent run.
The messages matched in :data:`FAILURES` are the real ones in tests/ota/fixtures/.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from memu_common import MemuError
from memu_common.run import NOTIFY_PLACEHOLDER, Completed, run_async
from memu_ota.config import OtaConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

UNIT = "memu-sysupdate"
LIST_TIMEOUT_S = 300.0
UPDATE_TIMEOUT_S = 6 * 3600.0


@dataclass(frozen=True)
class Listing:
    """``list --json=short``: the newest installed version and every known one."""

    current: str | None
    versions: tuple[str, ...]


@dataclass(frozen=True)
class VersionInfo:
    """``list VERSION --json=short``: what sysupdate knows about one version."""

    version: str
    available: bool
    installed: bool
    incomplete: bool
    obsolete: bool
    protected: bool


@dataclass(frozen=True)
class Progress:
    """One progress report during ``update``: percent 0-100 over all transfers, or None
    when the datagram only carried a status line or the chosen version."""

    percent: int | None
    version: str | None
    status: str | None


class SysupdateError(MemuError):
    """sysupdate failed; ``reason`` is a short code (see :data:`FAILURES`), ``detail`` the
    raw stderr tail (for the log, not the person)."""

    def __init__(self, message: str, *, hint: str | None, reason: str, detail: str) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.detail = detail


# (reason, pattern in stderr, message, hint): first match wins; the order matters.
FAILURES: tuple[tuple[str, str, str, str], ...] = (
    ("busy", r"already (loaded|active|exists)|Unit memu-sysupdate\S* .*already",
     "another update is already running",
     "wait for it to finish (see journalctl -u memu-sysupdate)"),
    ("signature-key-unknown", r"Can't check signature: No public key",
     "the update is signed with a key this box does not trust",
     "check the channel URL; official releases are signed with the Memu release key"),
    ("signature-invalid", r"BAD signature|Signature verification failed",
     "the update's signature is not valid (the channel's file list was altered)",
     "the release on the server is damaged or tampered with; do not use this server"),
    ("unsigned", r"Failed to retrieve signature file",
     "the channel is not signed (SHA256SUMS.gpg is missing), so this box refuses it",
     "publish releases with `just release`, which signs them"),
    ("checksum", r"did not check out|Checksum .* did not",
     "a downloaded file does not match the signed checksum (tampered or truncated)",
     "nothing was changed; try again later, and check the server if it repeats"),
    ("channel-missing", r"SHA256SUMS(\.gpg)? failed with code 404",
     "the release channel was not found on the update server",
     "check the base URL and channel in the update settings"),
    ("file-missing", r"failed with code 404",
     "a file of this release is missing on the update server",
     "the release is incomplete on the server; try again later"),
    ("oversized", r"File overly large, refusing|failed with exit status \d+: File too large",
     "the update is larger than the free OS slot, so this box refuses it",
     "nothing was changed; this release was built for a bigger slot layout"),
    ("no-space", r"No space left on device|Failed to write file|Disk quota exceeded",
     "could not write the update to disk (no space or a failing disk)",
     "nothing was changed; free space or check the disk"),
    # After "no-space": a full disk also ends in this line, but says "Failed to write file".
    ("damaged", r"\(sd-pull-raw\) failed with exit status \d+: Input/output error",
     "a downloaded file could not be unpacked (damaged, tampered with or truncated)",
     "nothing was changed; try again later, and check the server if it repeats"),
    ("network", r"Could not connect|Could not resolve|Transfer failed|Premature connection"
     r"|timed out|Connection reset|failed with code \d+",
     "could not download from the update server",
     "check the box's network connection and the update server; it will be retried"),
    ("version-unknown", r"Update '[^']*' not found",
     "that version is not offered (complete) in this channel",
     "check for updates again and pick an offered version"),
    ("no-definitions", r"No transfer definitions found",
     "the update definitions are missing",
     "restart memu-agent; if it persists, this image has no OTA support"),
)


def explain(result: Completed, what: str) -> SysupdateError:
    """Turn a failed sysupdate run into a message and hint for a person."""
    detail = result.stderr_tail()
    for reason, pattern, message, hint in FAILURES:
        if re.search(pattern, result.stderr):
            return SysupdateError(f"{what}: {message}", hint=hint, reason=reason, detail=detail)
    errno_ = next((m["ERRNO"] for m in result.notify if "ERRNO" in m), None)
    last = detail.splitlines()[-1] if detail else f"exit status {result.returncode}"
    if errno_ == "28":
        reason, pattern, message, hint = next(f for f in FAILURES if f[0] == "no-space")
        return SysupdateError(f"{what}: {message}", hint=hint, reason=reason, detail=detail)
    return SysupdateError(
        f"{what}: the update tool failed ({last})",
        hint="see journalctl -u memu-agent -u memu-sysupdate",
        reason="other",
        detail=detail,
    )


def failed(result: Completed) -> bool:
    """True when sysupdate reported an error (non-zero exit with ``ERRNO=``, or a crash)."""
    if result.returncode == 0:
        return False
    return result.returncode != 1 or any("ERRNO" in m for m in result.notify)


def parse_listing(stdout: str) -> Listing:
    """Parse ``list --json=short``.

    Raises:
        ValueError: not the expected JSON object.
    """
    data = _json_object(stdout)
    versions = data.get("all")
    current = data.get("current", data.get("current+pending"))
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise ValueError("'all' is not a list of versions")
    if current is not None and not isinstance(current, str):
        raise ValueError("'current' is not a version")
    return Listing(current=current, versions=tuple(versions))


def parse_version_info(stdout: str) -> VersionInfo:
    """Parse ``list VERSION --json=short``.

    Raises:
        ValueError: not the expected JSON object.
    """
    data = _json_object(stdout)
    version = data.get("version")
    if not isinstance(version, str):
        raise ValueError("'version' missing")
    flags = {k: bool(data.get(k, False)) for k in
             ("available", "installed", "incomplete", "obsolete", "protected")}
    return VersionInfo(version=version, **flags)


def parse_progress(msg: dict[str, str]) -> Progress | None:
    """A notify datagram as progress, or None when it carries nothing for us."""
    percent: int | None = None
    raw = msg.get("X_SYSUPDATE_PROGRESS")
    if raw is not None:
        try:
            percent = max(0, min(100, int(raw)))
        except ValueError:
            percent = None
    version = msg.get("X_SYSUPDATE_VERSION")
    status = msg.get("STATUS")
    if percent is None and version is None and status is None:
        return None
    return Progress(percent=percent, version=version, status=status)


def _json_object(stdout: str) -> dict[str, Any]:
    try:
        data = json.loads(stdout)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def transient(argv: list[str], unit: str) -> list[str]:
    """``argv`` run in a transient service ``unit`` by ``systemd-run`` (systemd-run(1)):
    outside the agent's sandbox, with the privileges it lacks (block devices, partitions),
    at low CPU and idle I/O priority, its output piped back and its sd_notify messages sent
    to the caller's socket (:data:`NOTIFY_PLACEHOLDER`)."""
    return ["systemd-run", f"--unit={unit}", "--quiet", "--wait", "--pipe", "--collect",
            "--service-type=exec", "-p", "Nice=10", "-p", "IOSchedulingClass=idle",
            f"--setenv=NOTIFY_SOCKET={NOTIFY_PLACEHOLDER}", "--", *argv]


class Sysupdate:
    """Runs sysupdate verbs for one :class:`OtaConfig` (see the module docstring)."""

    def __init__(self, config: OtaConfig, definitions: Path | None = None) -> None:
        """``definitions``: the transfer files to use instead of the channel's
        (``config.definitions_dir``), e.g. a delta update's local channel."""
        self._config = config
        self._definitions = definitions or config.definitions_dir

    def argv(self, *args: str) -> list[str]:
        """The full command line for ``systemd-sysupdate <args>``."""
        tool = [str(self._config.sysupdate), "--no-pager",
                f"--definitions={self._definitions}", *args]
        return transient(tool, UNIT) if self._config.isolate else tool

    async def _run(self, *args: str, time_limit_s: float,
                   on_notify: Callable[[dict[str, str]], None] | None = None) -> Completed:
        result = await run_async(self.argv(*args), time_limit_s=time_limit_s,
                                 env={"SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "cat"},
                                 notify_dir=self._config.runtime_dir, on_notify=on_notify)
        log.debug("sysupdate %s: exit %d", " ".join(args), result.returncode)
        return result

    async def list_versions(self) -> Listing:
        """Installed and offered versions. Raises SysupdateError."""
        result = await self._run("list", "--json=short", time_limit_s=LIST_TIMEOUT_S)
        return self._parsed(result, "cannot list versions", parse_listing)

    async def version_info(self, version: str) -> VersionInfo:
        """Flags of one version. Raises SysupdateError."""
        result = await self._run("list", version, "--json=short", time_limit_s=LIST_TIMEOUT_S)
        return self._parsed(result, f"cannot look up version {version}", parse_version_info)

    async def update(self, version: str, on_progress: Callable[[Progress], None]) -> None:
        """Download, verify and install ``version``; ``on_progress`` sees each report.

        Raises:
            SysupdateError: anything went wrong; nothing was activated.
        """
        def notify(msg: dict[str, str]) -> None:
            progress = parse_progress(msg)
            if progress is not None:
                on_progress(progress)

        result = await self._run("update", version, time_limit_s=UPDATE_TIMEOUT_S, on_notify=notify)
        if result.returncode != 0:
            raise self._log(explain(result, f"update to {version} failed"))

    def _parsed(self, result: Completed, what: str, parse: Callable[[str], T]) -> T:
        if result.returncode != 0:
            raise self._log(explain(result, what))
        try:
            return parse(result.stdout)
        except ValueError as e:
            raise self._log(SysupdateError(
                f"{what}: unexpected output from the update tool ({e})",
                hint="is systemd-sysupdate version 257 or newer?", reason="output",
                detail=result.stdout[-500:])) from None

    @staticmethod
    def _log(error: SysupdateError) -> SysupdateError:
        log.error("%s [%s]; sysupdate said:\n%s", error, error.reason, error.detail)
        return error
