"""The update orchestrator the agent runs: one state machine around systemd-sysupdate.

States: ``idle → checking → downloading (progress %) → ready`` (written, waiting for a
reboot) ``→ rebooting``; any step may end in ``failed`` (with a message), after which a new
check or install may start. Only one operation runs at a time; asking for another while
one runs raises :class:`UpdateBusy`. Installs are refused (:class:`UpdateRefused`) for a
version that is not newer than the running one, a blocked (rolled back) one, or when the
channel offers no complete newer version.

The persisted side (``state.json``) records the pending update before sysupdate starts
writing, moves it to ``written`` when it succeeded and ``rebooting`` when a reboot is
asked for; :mod:`memu_ota.report` reads it at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from memu_common import MemuError, boards, run
from memu_common.settings import base_url as parse_base_url
from memu_ota import definitions, delta_update, report
from memu_ota.boot import BootBackend, for_board
from memu_ota.config import (
    OtaConfig,
    apply_overrides,
    clear_overrides,
    parse_channel,
    save_overrides,
)
from memu_ota.state import (
    Check,
    OtaState,
    Outcome,
    Pending,
    PendingPhase,
    load_health_failure,
    load_state,
    save_state,
)
from memu_ota.sysupdate import Progress, Sysupdate
from memu_ota.versions import is_newer, newest

log = logging.getLogger(__name__)

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class Phase(enum.StrEnum):
    IDLE = "idle"
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    READY = "ready"
    REBOOTING = "rebooting"
    FAILED = "failed"


class UpdateBusy(MemuError):
    """Another update operation is running."""


class UpdateInvalid(MemuError):
    """The request itself is malformed (bad version, channel, URL or time)."""


class UpdateRefused(MemuError):
    """The request cannot be done in the current situation (a clear message says why)."""


def _boot_id() -> str | None:
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


class Updater:
    """The agent's updater; ``await start()`` once, ``await stop()`` once.

    Args:
        config: the OTA settings (run-time overrides are applied in ``start()``).
        running: the running OS version.
        on_status: receives one short line for sd_notify ``STATUS=`` on every change.
        boot: the box's boot chain (default: the one of the board this image is for,
            :func:`memu_ota.boot.for_board`).
        reboot_command: what reboots the box instead of the boot chain's
            :meth:`~memu_ota.boot.BootBackend.prepare_reboot` (tests pass a harmless one).
        clock: seconds since the epoch (tests pass a fake).
    """

    def __init__(
        self,
        config: OtaConfig,
        *,
        running: str,
        on_status: Callable[[str], None] | None = None,
        boot: BootBackend | None = None,
        reboot_command: tuple[str, ...] | None = None,
        clock: Callable[[], float] = time.time,
        boot_id: str | None = None,
    ) -> None:
        self._config = config
        self._defaults = config  # the image's settings, before run-time overrides
        self._running = running
        self._on_status = on_status or (lambda line: None)
        self._boot = boot or for_board(boards.running(), config, running)
        self._reboot_command = reboot_command
        self._clock = clock
        self._boot_id = boot_id if boot_id is not None else _boot_id()
        self._state = load_state(config.state_dir)
        self.phase = Phase.IDLE
        self.progress: int | None = None
        self.available: str | None = None
        self.target: str | None = None
        self.message: str | None = None
        self._job: asyncio.Task[None] | None = None
        self._periodic: asyncio.Task[None] | None = None
        self._reboot_handle: asyncio.TimerHandle | None = None
        self.reboot_at: float | None = None
        #: The last try to install by delta in this run (delta_update.Attempt.report).
        self.delta: dict[str, Any] | None = None
        if self._state.pending and self._state.pending.phase is PendingPhase.WRITTEN:
            self.phase, self.target = Phase.READY, self._state.pending.to_version

    @property
    def config(self) -> OtaConfig:
        return self._config

    @property
    def state(self) -> OtaState:
        return self._state

    # ---- lifetime -------------------------------------------------------------------

    async def start(self, *, periodic: bool = True) -> None:
        """Apply run-time settings, report the last update, render definitions, and start
        the periodic check. Never raises: problems are logged and shown as ``failed``."""
        self._config, problems = apply_overrides(self._config)
        for problem in problems:
            log.error("update settings: %s", problem)
        self.reconcile()
        self._render(notify=False)  # the agent's READY status follows right after
        if periodic:
            self._periodic = asyncio.create_task(self._check_periodically())

    async def stop(self) -> None:
        """Cancel the periodic check, a scheduled reboot and a running operation."""
        if self._reboot_handle is not None:
            self._reboot_handle.cancel()
        for task in (self._periodic, self._job):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def reconcile(self) -> str | None:
        """Work out how the last update ended (see :mod:`memu_ota.report`)."""
        result = report.reconcile(
            self._state, self._running, self._boot.entries(),
            load_health_failure(self._config.state_dir), boot_id=self._boot_id,
            now=self._clock())
        if result.state != self._state:
            self._save(result.state)
        if result.message:
            log.info("last update: %s", result.message)
            pending = self._state.pending
            if self.phase is Phase.READY and pending is None:
                self.phase, self.target = Phase.IDLE, None
            elif (self.phase is Phase.IDLE and pending is not None
                  and pending.phase is PendingPhase.WRITTEN):
                self.phase, self.target = Phase.READY, pending.to_version
        return result.message

    def _render(self, *, notify: bool = True) -> bool:
        try:
            definitions.render(self._config.template_dir, self._config.definitions_dir,
                               self._config.base_url, self._config.channel,
                               self._config.boot_tries, self._config.image_name)
        except MemuError as e:
            log.error("%s", e)
            if notify:
                self._fail(str(e))
            else:
                self.phase, self.message = Phase.FAILED, str(e)
            return False
        return True

    # ---- what the API shows ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The ``update`` object of ``/api/status`` and ``GET /api/update``.

        When this boot runs the pending update's version, first checks whether it has been
        blessed meanwhile, so "updated from X to Y" shows as soon as the health gate passed
        (other outcomes are only decided at start, after a reboot)."""
        pending = self._state.pending
        if pending is not None and pending.to_version == self._running and not self.busy():
            self.reconcile()
        s = self._state
        return {
            "state": str(self.phase),
            "progress": self.progress,
            "available": self.available,
            "target": self.target,
            "running": self._running,
            "channel": str(self._config.channel),
            "base_url": self._config.base_url,
            "last_check": {"at": _iso(s.last_check.at), "result": s.last_check.result}
            if s.last_check else None,
            "last_result": s.last_result.message if s.last_result else None,
            "blocked": list(s.blocked),
            "reboot_at": _iso(self.reboot_at) if self.reboot_at else None,
            "message": self.message,
            "delta": self.delta,
        }

    def _set(self, phase: Phase, message: str | None, progress: int | None = None) -> None:
        self.phase, self.message, self.progress = phase, message, progress
        line = f"update: {phase}" + (f" {self.target}" if self.target else "")
        if progress is not None:
            line += f" ({progress}%)"
        self._on_status(line)

    def _fail(self, message: str) -> None:
        self._set(Phase.FAILED, message)

    def _save(self, state: OtaState) -> None:
        self._state = state
        try:
            save_state(self._config.state_dir, state)
        except OSError as e:
            log.error("cannot save the update state in %s: %s", self._config.state_dir, e)

    # ---- requests -------------------------------------------------------------------

    def busy(self) -> bool:
        return self._job is not None and not self._job.done()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self.busy() or self.phase is Phase.REBOOTING:
            coro.close()
            raise UpdateBusy(f"an update operation is already running ({self.phase})",
                             hint="wait for it to finish (GET /api/update shows progress)")
        self._job = asyncio.create_task(coro)

    def request_check(self) -> None:
        """Start a check in the background. Raises UpdateBusy."""
        self._spawn(self._check())
        self._set(Phase.CHECKING, f"checking the {self._config.channel} channel")

    def request_install(self, version: str | None = None) -> None:
        """Start installing ``version`` (default: the newest offered) in the background.

        Raises:
            UpdateBusy: another operation runs, or a reboot is under way.
            UpdateRefused: ``version`` is not newer than the running one, or blocked, or
                an update is already written and waits for a reboot.
        """
        if self.phase is Phase.READY:
            raise UpdateRefused(f"{self.target} is installed and waits for a restart",
                                hint='restart the box ({"action": "reboot"}) to use it')
        if version is not None:
            self._refuse_version(version)
        self._spawn(self._install(version))
        self._set(Phase.CHECKING, f"checking the {self._config.channel} channel")

    def set_source(self, channel: str | None, base_url: str | None) -> None:
        """Change channel and/or base URL, persist them, re-render the definitions.

        Raises:
            UpdateBusy: an operation runs. UpdateInvalid: bad values (nothing changed).
        """
        if self.busy() or self.phase in (Phase.READY, Phase.REBOOTING):
            raise UpdateBusy("cannot change the update source now",
                             hint="wait until no update is running or waiting for a restart")
        new = self._config
        try:
            if channel is not None:
                new = replace(new, channel=parse_channel(channel))
            if base_url is not None:
                new = replace(new, base_url=parse_base_url(base_url))
        except ValueError as e:
            raise UpdateInvalid(f"update source not changed: {e}") from None
        try:
            save_overrides(new)
        except OSError as e:
            raise MemuError(f"cannot save the update settings: {e}") from e
        self._config, self.available = new, None
        if self._render() and self.phase is Phase.FAILED:
            self._set(Phase.IDLE, None)

    def reset_source(self) -> None:
        """Put channel and base URL back to the image's settings and forget the run-time
        override (used when the box is claimed: a source changed before the claim must not
        outlive it). Never raises: a file that cannot be removed is logged."""
        try:
            clear_overrides(self._config)
        except OSError as e:
            log.error("cannot remove the update settings override: %s", e)
        self._config = replace(self._config, channel=self._defaults.channel,
                               base_url=self._defaults.base_url)
        self.available = None
        if self._render() and self.phase is Phase.FAILED:
            self._set(Phase.IDLE, None)
        log.info("update source reset to the image's settings (%s channel)",
                 self._config.channel)

    def _refuse_version(self, version: str) -> None:
        if not is_newer(version, self._running):
            raise UpdateRefused(f"{version} is not newer than the running {self._running}",
                                hint="this box only moves forward")
        if version in self._state.blocked:
            raise UpdateRefused(f"{version} was rolled back on this box and is blocked",
                                hint="wait for a newer version")

    # ---- operations -----------------------------------------------------------------

    async def _newest_offered(self, driver: Sysupdate) -> str | None:
        listing = await driver.list_versions()
        candidates = [v for v in listing.versions
                      if is_newer(v, self._running) and v not in self._state.blocked]
        while candidates:
            best = newest(candidates)
            assert best is not None
            info = await driver.version_info(best)
            if info.available and not info.incomplete and not info.obsolete:
                return best
            candidates.remove(best)
        return None

    async def _check(self) -> None:
        self._set(Phase.CHECKING, f"checking the {self._config.channel} channel")
        try:
            found = await self._newest_offered(Sysupdate(self._config))
        except MemuError as e:
            self._record_check(f"failed: {e.message}")
            self._fail(str(e))
            return
        self.available = found
        result = f"{found} is available" if found else f"up to date ({self._running})"
        self._record_check(result)
        self._set(Phase.IDLE, result)

    def _record_check(self, result: str) -> None:
        self._save(replace(self._state, last_check=Check(self._clock(), result)))

    async def _install(self, version: str | None) -> None:
        self._set(Phase.CHECKING, f"checking the {self._config.channel} channel")
        driver = Sysupdate(self._config)
        try:
            offered = await self._newest_offered(driver)
            if version is None:
                if offered is None:
                    raise UpdateRefused(
                        f"the {self._config.channel} channel offers no complete version "
                        f"newer than {self._running}", hint="nothing to install")
                version = offered
            self.available, self.target = offered, version
            self._save(replace(self._state, pending=Pending(
                self._running, version, self._clock(), PendingPhase.DOWNLOADING,
                self._boot_id)))
            self._set(Phase.DOWNLOADING, f"downloading {version}", 0)
            tried = await delta_update.install(self._config, self._boot, self._running,
                                               version, self._on_progress)
            self.delta = tried.report() if tried else None
            if tried is None or tried.prepared is None:
                if tried:
                    self._set(Phase.DOWNLOADING, f"downloading {version} whole: "
                              f"{tried.fallback}", 0)
                await driver.update(version, self._on_progress)
            delta_update.discard(self._config)
        except MemuError as e:
            if self._state.pending is not None:
                self._save(replace(self._state, pending=None, last_result=Outcome(
                    "failed", f"update to {version} failed: {e.message}", self._clock())))
            self.target = None
            self._fail(str(e))
            return
        assert self._state.pending is not None
        self._save(replace(self._state,
                           pending=replace(self._state.pending, phase=PendingPhase.WRITTEN)))
        self._set(Phase.READY, f"{version} is installed; restart the box to use it")

    def _on_progress(self, progress: Progress) -> None:
        if progress.percent is not None and progress.percent != self.progress:
            self._set(Phase.DOWNLOADING, f"downloading {self.target}", progress.percent)

    def reboot(self, at: dt.datetime | None = None) -> None:
        """Reboot into the installed update now, or at ``at`` (aware datetime).

        Raises:
            UpdateRefused: nothing is installed and waiting, or ``at`` is in the past.
        """
        if self.phase is not Phase.READY:
            raise UpdateRefused("there is no installed update waiting for a restart",
                                hint='install one first ({"action": "install"})')
        delay = 0.0 if at is None else at.timestamp() - self._clock()
        if delay < -60:
            raise UpdateRefused(f"{at.isoformat() if at else ''} is in the past",
                                hint="give a future time, or none for now")
        if self._reboot_handle is not None:
            self._reboot_handle.cancel()
        self.reboot_at = self._clock() + max(delay, 0.0)
        loop = asyncio.get_running_loop()
        self._reboot_handle = loop.call_later(max(delay, 0.0), self._reboot_now)
        self.message = f"restart scheduled at {_iso(self.reboot_at)}"

    def _reboot_now(self) -> None:
        self._reboot_handle = None
        if self._state.pending is not None:
            self._save(replace(self._state, pending=replace(
                self._state.pending, phase=PendingPhase.REBOOTING)))
        self._set(Phase.REBOOTING, f"restarting into {self.target}")
        self._job = asyncio.create_task(self._run_reboot())

    async def _run_reboot(self) -> None:
        try:
            argv = self._reboot_command or self._boot.prepare_reboot(self.target)
            await asyncio.to_thread(run, list(argv), hint="could not ask systemd to reboot")
        except MemuError as e:
            if self._state.pending is not None:
                self._save(replace(self._state, pending=replace(
                    self._state.pending, phase=PendingPhase.WRITTEN)))
            self._set(Phase.READY, f"restart failed: {e}")

    async def _check_periodically(self) -> None:
        interval, jitter = self._config.check_interval_s, self._config.jitter_s
        delay = min(interval, 60.0) + random.uniform(0, jitter)
        while True:
            await asyncio.sleep(delay)
            delay = interval + random.uniform(0, jitter)
            if self.busy() or self.phase in (Phase.READY, Phase.REBOOTING):
                continue
            self.reconcile()
            with contextlib.suppress(UpdateBusy):
                self.request_check()
