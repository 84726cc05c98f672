"""The assistant's chat session, watched by the box: when it is signed out, the box says so
and signs it back in by itself.

The assistant (the ``intelligence`` container) talks to Synapse with the access token that
setup recorded in ``/etc/memu/stack/intelligence/account.env``
(:func:`memu_firstboot.stack_config.write_bot_account`). That token stops working when
someone ends the assistant's session (a "sign out all sessions" in a chat app, an admin's
logout through Synapse's admin API, a restored database): the bot then cannot read or answer
anything, and its health check fails with "signed out". Every :data:`CHECK_S` seconds the
agent asks Synapse whose token it is (``GET /_matrix/client/v3/account/whoami``: 401
``M_UNKNOWN_TOKEN`` when revoked), and on a revoked one:

1. signs in as the assistant with the password setup made for it (``secrets/memu-bot-
   password``; ``POST /_matrix/client/v3/login``);
2. when that password no longer works (someone changed it), resets it through Synapse's
   admin API first, as the forgotten-admin-password route does
   (:func:`memu_agent.recover_pages.synapse_recoverer`, registration shared
   secret) — the box owns this account;
3. records the new session in ``account.env`` and reloads the stack (``systemctl reload
   memu-stack.service``), which re-creates the container with the new token (Compose
   re-creates a service whose environment changed).

A deactivated account (403 ``M_USER_DEACTIVATED``: the family removed the assistant on
purpose) is left alone, and the status says how to bring it back. A failed sign-in is tried
again after a back-off that doubles from :data:`CHECK_S` to :data:`MAX_BACKOFF_S`.

What the watch knows is ``/api/status``'s ``assistant`` object (:meth:`Watch.snapshot`).
Matrix client-server API: https://spec.matrix.org/latest/client-server-api/.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from memu_agent import background
from memu_agent.recover_pages import synapse_recoverer
from memu_common import MemuError
from memu_common.files import read_env_file
from memu_common.run import run_async
from memu_firstboot import stack_config
from memu_firstboot.form import BOT_USERNAME
from memu_firstboot.provision import Account, Homeserver, MatrixError, localpart

log = logging.getLogger(__name__)

#: Seconds between two checks of the assistant's session.
CHECK_S = 60.0
#: The longest wait, in seconds, before a failed sign-in is tried again.
MAX_BACKOFF_S = 30 * 60.0
#: The assistant's sessions made by the box are called this in the account's device list.
DEVICE_NAME = "Memu assistant"
#: Reloads the stack after a new session is recorded (memu-stack.service's ExecReload runs
#: ``memu_agent.stack up``).
RELOAD_STACK = ("systemctl", "reload", "memu-stack.service")


class Session(enum.StrEnum):
    """What the box knows about the assistant's chat session."""

    NOT_SET_UP = "not-set-up"  # no account recorded yet (before setup's accounts step)
    SIGNED_IN = "signed-in"
    SIGNED_OUT = "signed-out"  # the token was refused; signing back in failed (so far)
    REMOVED = "removed"  # the account was deactivated: left alone
    UNKNOWN = "unknown"  # the chat server did not answer


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One check's outcome, as ``/api/status`` shows it.

    Attributes:
        session: see :class:`Session`.
        message: one sentence for people ("The assistant was signed out; the box signed it
            back in at 14:02.").
        checked_at: seconds since the epoch.
        signed_in_again_at: when the box last signed the assistant back in (seconds since
            the epoch), or None.
    """

    session: Session
    message: str
    checked_at: float
    signed_in_again_at: float | None = None


def _hhmm(at: float) -> str:
    return time.strftime("%H:%M", time.localtime(at))


class Watch:
    """Checks the assistant's session and signs it back in (see the module doc).

    Args:
        config_dir: the stack's configuration (``account.env``, ``secrets/``).
        synapse_url: Synapse's client and admin APIs from the box's inside.
        reload_stack: re-creates the assistant's container with the new account; awaited
            (default: ``systemctl reload memu-stack.service``).
        check_s: seconds between checks.
    """

    def __init__(self, config_dir: Path, synapse_url: str,
                 reload_stack: Callable[[], Awaitable[None]] | None = None,
                 check_s: float = CHECK_S) -> None:
        self.config_dir = config_dir
        self.synapse_url = synapse_url
        self.check_s = check_s
        self._reload = reload_stack or _systemctl_reload
        self._verdict = self._not_set_up(0.0)
        if self._account().get("MEMU_BOT_ACCESS_TOKEN"):
            self._verdict = Verdict(Session.UNKNOWN, "The box has not checked the assistant "
                                    "yet.", 0.0)
        self._again_at: float | None = None
        self._failures = 0
        self._removed_token = ""
        self._restart_pending = False

    def snapshot(self) -> dict[str, object]:
        """``/api/status``'s ``assistant`` object: ``{"session": "signed-in" | …,
        "message": str, "checked_at": float, "signed_in_again_at": float | null}``."""
        v = self._verdict
        return {"session": str(v.session), "message": v.message, "checked_at": v.checked_at,
                "signed_in_again_at": v.signed_in_again_at}

    def next_wait_s(self) -> float:
        """Seconds until the next check: :attr:`check_s`, doubled for each sign-in that
        failed in a row, at most :data:`MAX_BACKOFF_S`."""
        return min(self.check_s * 2.0 ** min(self._failures, 32), max(MAX_BACKOFF_S, self.check_s))

    async def check(self) -> Verdict:
        """Check the session once, sign the assistant back in when its token was refused,
        and return (and keep, for :meth:`snapshot`) what the box now knows. Never raises
        for what the chat server or the files say; those become the verdict."""
        self._verdict = await self._check()
        return self._verdict

    async def _check(self) -> Verdict:
        now = time.time()
        account = self._account()
        token = account.get("MEMU_BOT_ACCESS_TOKEN", "")
        if not token:
            return self._not_set_up(now)
        if token == self._removed_token:  # the verdict stays "removed": asks nobody again
            return dataclasses.replace(self._verdict, checked_at=now)
        async with aiohttp.ClientSession() as http:
            hs = Homeserver(http, self.synapse_url)
            try:
                if await hs.whoami(token) is not None:
                    if self._restart_pending:  # signed in, but the bot still has the old one
                        return await self._restart(now)
                    self._failures = 0
                    return self._signed_in(now)
            except MatrixError as e:
                return Verdict(Session.UNKNOWN, f"The box could not ask the chat server about "
                               f"the assistant: {e}", now, self._again_at)
            log.warning("the assistant's access token was refused: signing it back in")
            try:
                fresh = await self._sign_in(hs, account.get("MEMU_BOT_USER_ID", ""))
            except _Removed as e:
                self._removed_token = token
                return Verdict(Session.REMOVED, str(e), now, self._again_at)
            except (MemuError, OSError) as e:
                self._failures += 1
                log.error("signing the assistant back in failed: %s", e)
                return Verdict(Session.SIGNED_OUT, "The assistant is signed out of chat and "
                               f"does not answer; signing it back in failed ({e}). The box "
                               f"tries again in {self.next_wait_s() / 60:.0f} minutes.",
                               now, self._again_at)
        await asyncio.to_thread(stack_config.write_bot_account, self.config_dir,
                                fresh.user_id, fresh.access_token, fresh.device_id)
        log.info("the assistant has a new session (device %s)", fresh.device_id)
        self._restart_pending = True
        return await self._restart(now)

    async def _restart(self, now: float) -> Verdict:
        """Reload the stack so the assistant runs with the recorded session; until that
        works, every check tries again (the recorded token is valid by then)."""
        try:
            await self._reload()
        except (MemuError, OSError) as e:
            self._failures += 1
            log.error("restarting the assistant with its new session failed: %s", e)
            return Verdict(Session.SIGNED_OUT, "The box signed the assistant back in, but "
                           f"could not restart it ({e}); it tries again in "
                           f"{self.next_wait_s() / 60:.0f} minutes.", now, self._again_at)
        self._restart_pending = False
        self._failures = 0
        self._again_at = now
        return self._signed_in(now)

    def _account(self) -> dict[str, str]:
        """The recorded account.env ({} before setup's accounts step)."""
        return read_env_file(self.config_dir / stack_config.BOT_ACCOUNT)

    @staticmethod
    def _not_set_up(now: float) -> Verdict:
        return Verdict(Session.NOT_SET_UP, "The assistant is not set up yet.", now)

    def _signed_in(self, now: float) -> Verdict:
        message = "The assistant is signed in to chat."
        if self._again_at is not None:
            message = (f"The assistant is signed in to chat (it was signed out; the box "
                       f"signed it back in at {_hhmm(self._again_at)}).")
        return Verdict(Session.SIGNED_IN, message, now, self._again_at)

    async def _sign_in(self, hs: Homeserver, user_id: str) -> Account:
        """A new session for the assistant; raises _Removed, MatrixError or OSError."""
        password = (await asyncio.to_thread(
            (self.config_dir / stack_config.BOT_PASSWORD).read_text)).strip()
        name = localpart(user_id) if user_id.startswith("@") else BOT_USERNAME
        try:
            return await _login(hs, name, password)
        except MatrixError as e:
            if e.status != 403:
                raise
        # Synapse also forgets a deactivated account's password, so this path is taken for
        # one too: the reset sets a password, and the sign-in after it says "deactivated".
        log.warning("the assistant's password was refused: resetting it to the box's")
        await synapse_recoverer(self.synapse_url,
                                self.config_dir / stack_config.REGISTRATION_SECRET)(
            user_id, password)
        return await _login(hs, name, password)


async def _login(hs: Homeserver, name: str, password: str) -> Account:
    try:
        return await hs.login(name, password, device_name=DEVICE_NAME)
    except MatrixError as e:
        if e.errcode == "M_USER_DEACTIVATED":
            raise _Removed() from e
        raise


class _Removed(MemuError):
    def __init__(self) -> None:
        super().__init__("The assistant's chat account was removed (deactivated), so it is "
                         "not in chat; the box leaves it so.",
                         hint="to have an assistant again, reset the box to factory settings")


async def _systemctl_reload() -> None:
    done = await run_async(RELOAD_STACK, time_limit_s=600)
    if done.returncode != 0:
        raise MemuError(f"reloading the stack failed: {done.stderr_tail(1) or done.returncode}")


WATCH: web.AppKey[Watch] = web.AppKey("memu_agent.assistant.watch", Watch)


def add(app: web.Application, watch: Watch) -> None:
    """Run ``watch`` while ``app`` runs; ``/api/status`` shows its verdict."""
    app[WATCH] = watch
    background.repeat(app, "checking the assistant's chat session", watch.check,
                      watch.next_wait_s)
