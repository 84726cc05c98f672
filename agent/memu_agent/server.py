"""The agent server: binds the web server, then tells systemd it is ready; undoes it all in
reverse order on stop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Mapping

from aiohttp import web

from memu_agent import recover_pages
from memu_agent.app import make_app, read_boot_facts
from memu_agent.config import AgentConfig
from memu_agent.console import AGETTY_ISSUE_DIRS, issue_text, reload_agetty, write_issue
from memu_agent.facts import HostPaths, hostname, local_name
from memu_agent.notify import Notifier, watchdog_interval
from memu_agent.watchdog import Watchdog
from memu_common import MemuError
from memu_firstboot.setup_token import ensure_token
from memu_firstboot.state import SetupState, setup_state
from memu_ota.updater import Updater

log = logging.getLogger(__name__)


class AgentServer:
    """memu-agent's lifetime: ``await start()`` once, ``await stop()`` once.

    ``start()`` makes the setup token and console greeting, starts the updater (which
    reports how the last update ended), binds the web server, and only then sends
    ``READY=1``; the watchdog pings from the event loop from the beginning.

    Args:
        config: the agent configuration.
        env: the environment to read ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and
            ``$WATCHDOG_PID`` from (default: ``os.environ``).
        paths: where system files live (default: the real ones).
        access_log: log every HTTP request (aiohttp's access log).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        env: Mapping[str, str] | None = None,
        paths: HostPaths | None = None,
        access_log: bool = False,
    ) -> None:
        self._config = config
        environ = os.environ if env is None else env
        self._notifier = Notifier(environ)
        self._paths = paths or HostPaths()
        self._access_log = access_log
        interval = watchdog_interval(environ) if config.watchdog else None
        self._watchdog = Watchdog(self._notifier, interval)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ports: list[int] = []
        self._updater: Updater | None = None
        self._serving = ""

    @property
    def notifier(self) -> Notifier:
        """The sd_notify sender this server uses."""
        return self._notifier

    @property
    def ports(self) -> list[int]:
        """The TCP ports the server listens on (after ``start()``)."""
        return list(self._ports)

    def _greet_console(self) -> None:
        """Write the console greeting, with the setup code (made now if missing) while the
        box is not set up; never fatal. After setup no code is made again: it is gone."""
        state_dir = self._config.state_dir
        token: str | None = None
        if setup_state(state_dir) is not SetupState.DONE:
            try:
                token = ensure_token(state_dir)
            except OSError as e:
                log.error(
                    "cannot store the setup token in %s: %s. Is the state directory "
                    "writable (systemd StateDirectory=memu)?",
                    state_dir,
                    e,
                )
                return
        text = issue_text(self._config.device_name, token,
                          local_name(hostname(self._paths)),
                          recovery=None if token else recover_pages.for_console(state_dir))
        try:
            path = write_issue(self._config.issue_dir, text)
        except OSError as e:
            log.error("cannot write the console greeting in %s: %s", self._config.issue_dir, e)
            return
        log.info("console greeting written to %s", path)

    async def start(self) -> None:
        """Start everything, then send ``READY=1``.

        Raises:
            MemuError: the web server cannot listen (port taken, no permission).
        """
        self._notifier.status("starting")
        self._watchdog.start()
        self._greet_console()
        facts, boot = read_boot_facts(self._paths, self._config.ota)
        self._updater = Updater(self._config.ota, running=facts.version, boot=boot,
                                on_status=self._update_status)
        await self._updater.start()
        app = make_app(self._config, paths=self._paths, facts=facts, updater=self._updater,
                       on_setup_exit=self._setup_ended)
        runner = web.AppRunner(
            app, access_log=log if self._access_log else None, handle_signals=False
        )
        await runner.setup()
        self._runner = runner
        self._site = await self._listen(runner)
        self._ports = sorted({addr[1] for addr in runner.addresses if isinstance(addr, tuple)})
        ports = ", ".join(map(str, self._ports))
        if setup_state(self._config.state_dir) is SetupState.DONE:
            what = f"serving status page on port {ports}"
        else:
            what = f"serving first-boot page on port {ports}"
        log.info("%s", what)
        self._serving = what
        self._notifier.notify(READY="1", STATUS=what)
        if self._config.issue_dir in AGETTY_ISSUE_DIRS:
            await asyncio.to_thread(reload_agetty)

    async def _setup_ended(self, status: int) -> None:
        """The setup apply ended: once the box is set up, the console no longer shows the
        (deleted) setup code and its QR code."""
        if setup_state(self._config.state_dir) is SetupState.DONE:
            self._greet_console()
            if self._config.issue_dir in AGETTY_ISSUE_DIRS:
                await asyncio.to_thread(reload_agetty)

    def _update_status(self, line: str) -> None:
        """sd_notify STATUS= with the update line after what the agent serves."""
        self._notifier.status(f"{self._serving}; {line}" if self._serving else line)

    async def _listen(self, runner: web.AppRunner) -> web.TCPSite:
        """Bind the web server. With ``host = ""`` that is every address, IPv4 and IPv6; on a
        kernel without IPv6 it falls back to IPv4 only.

        Raises:
            MemuError: it cannot listen (port taken, no permission, bad address).
        """
        hosts: list[str | None] = [self._config.host] if self._config.host else [None, "0.0.0.0"]
        port = self._config.port
        for i, host in enumerate(hosts):
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as e:
                with contextlib.suppress(RuntimeError):  # not registered with the runner
                    await site.stop()
                no_family = e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
                if host is None and no_family and i + 1 < len(hosts):
                    log.warning("cannot listen on every address (%s); trying IPv4 only", e)
                    continue
                if e.errno == errno.EADDRINUSE:
                    hint = "another program is using it; stop it or set `port` in the config"
                else:
                    hint = "check `host` and `port` in /etc/memu/agent.toml"
                raise MemuError(
                    f"cannot listen on {host or '*'} port {port}: {e.strerror or e}", hint=hint
                ) from e
            return site
        raise AssertionError("unreachable: the last host either returns or raises")

    async def stop(self) -> None:
        """Send ``STOPPING=1``; stop the site, the runner, then the watchdog (reverse of start).

        Safe to call after a failed or partial ``start()``.
        """
        self._notifier.notify(STOPPING="1", STATUS="stopping")
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        updater, self._updater = self._updater, None
        if updater is not None:
            await updater.stop()
        await self._watchdog.stop()
        self._notifier.close()
        log.info("stopped")
