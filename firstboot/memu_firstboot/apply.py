"""The first-boot apply: what the box does after the family presses "Set up", step by step.

    python3 -m memu_firstboot.apply [--state-dir DIR] [--config DIR] [--synapse URL]

The agent runs it as a child process (never inside its aiohttp process) with the family's
checked form in ``<state_dir>/setup-request.json`` (0600, see :func:`save_request`) and
reads the progress it writes to ``<state_dir>/setup-progress.json``
(:mod:`memu_firstboot.progress`). Every step is idempotent, so Retry (and a run after a
power cut or a crash) completes what is missing and makes nothing twice:

    secrets        the stack's generated secrets and the box's API token for scripts,
                   made once and kept (0600)
    config         the family's settings saved (memu_firstboot.reapply), the stack's
                   configuration written from them by the pyinfra deploy
                   (memu_firstboot.deploy, a child process; its operations show as it
                   runs), the family's time zone and the box's pretty name on the host
    database       the stack started: PostgreSQL makes its databases on its first start
    chat server    Synapse answering ``/health``
    accounts       the admin's and the assistant's Matrix accounts (shared-secret API)
    family room    ``#family:<server>``, the admin in it, the assistant invited and joined
    assistant      the assistant's account recorded for its container, which then starts
                   (begun as soon as the account exists, so it starts while the family
                   room is made; this step waits for it)
    photos         Immich's administrator made as the admin, with the admin's password, when
                   Immich runs (:mod:`memu_firstboot.photos`); otherwise later, at the
                   admin's first sign-in to ``/admin`` after Immich arrives
    remote access  Tailscale, when the family gave an auth key (skipped otherwise): connected,
                   or why not yet (:mod:`memu_firstboot.remote`; never fails the setup)

The last action of a successful run writes the ``setup-done`` marker
(:mod:`memu_firstboot.state`) and deletes the stored request (it holds the admin's
password) and the setup code: from then on the setup routes are closed.

Exit status: 0 when every step is done, 1 when a step failed (the progress file says which
and why, in plain words), 2 on bad arguments or an unreadable request.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from memu_common import MemuError
from memu_common.files import read_json_object, write_atomic, write_json_atomic
from memu_common.run import run_async
from memu_firstboot import photos, reapply, remote, stack_config
from memu_firstboot.form import BOT_USERNAME, SetupRequest
from memu_firstboot.host import set_host
from memu_firstboot.progress import (
    PROGRESS_FILE,
    Later,
    Progress,
    RunState,
    Skipped,
    Step,
    run_steps,
)
from memu_firstboot.provision import SYNAPSE_URL, Account, Homeserver
from memu_firstboot.run_deploy import PYINFRA, run_deploy
from memu_firstboot.setup_token import TOKEN_FILE
from memu_firstboot.state import API_TOKEN_FILE, SETUP_DONE_MARKER, STATE_DIR

log = logging.getLogger(__name__)

REQUEST_FILE = "setup-request.json"


@dataclass(frozen=True)
class StoredRequest:
    """What the agent hands the apply: the checked form and the server name it fixed.

    Attributes:
        form: the family's checked form.
        server_name: the Matrix server name (permanent: it is in every user and room ID).
    """

    form: SetupRequest
    server_name: str


def save_request(state_dir: Path, stored: StoredRequest) -> Path:
    """Store ``stored`` atomically in ``<state_dir>/setup-request.json`` (0600: it holds
    the admin's password until the apply has made the account and deletes it).

    Raises:
        OSError: it cannot be written.
    """
    path = state_dir / REQUEST_FILE
    write_json_atomic(path, {"form": dataclasses.asdict(stored.form),
                             "server_name": stored.server_name}, mode=0o600)
    return path


def load_request(state_dir: Path) -> StoredRequest | None:
    """The stored request, or None when there is none or it is unreadable."""
    data = read_json_object(state_dir / REQUEST_FILE)
    if not data or not isinstance(data.get("form"), dict):
        return None
    try:
        return StoredRequest(SetupRequest(**data["form"]), str(data["server_name"]))
    except (TypeError, KeyError):
        return None


@dataclass(frozen=True)
class Box:
    """Where the apply finds the box's parts.

    Attributes:
        state_dir: the agent's state directory (request, progress, marker, setup code).
        config_dir: the stack's configuration (``/etc/memu/stack``).
        synapse_url: Synapse's client and admin APIs from the box's inside.
        start_stack: the command that starts the stack and returns once it is up.
        reload_stack: the command that starts what is configured but not running (the
            assistant, once its account exists).
        reload_tries: how many times ``reload_stack`` is tried before the step fails.
        reload_wait_s: seconds between those tries.
        set_timezone: the command that sets the host's time zone (the zone is appended).
        set_pretty_name: the command that sets the host's pretty name (appended); its
            host name stays ``memu``, which ``memu.local`` answers to.
        wait_s: seconds to wait for the chat server to answer.
        tailscale_socket: the stack's Tailscale LocalAPI socket.
        remote_wait_s: seconds to wait for Tailscale to connect.
        immich_url: Immich's server on loopback (past nginx).
        photos_wait_s: seconds to wait for a starting Immich.
        pyinfra: pyinfra's command line, which runs the configuration's deploy
            (:mod:`memu_firstboot.deploy`).
    """

    state_dir: Path = STATE_DIR
    config_dir: Path = stack_config.CONFIG_DIR
    synapse_url: str = SYNAPSE_URL
    start_stack: tuple[str, ...] = ("systemctl", "start", "memu-stack.service")
    reload_stack: tuple[str, ...] = ("systemctl", "reload", "memu-stack.service")
    reload_tries: int = 4
    reload_wait_s: float = 15.0
    set_timezone: tuple[str, ...] = ("timedatectl", "set-timezone")
    set_pretty_name: tuple[str, ...] = ("hostnamectl", "set-hostname", "--pretty")
    wait_s: float = 900.0
    tailscale_socket: Path = remote.SOCKET
    remote_wait_s: float = 90.0
    immich_url: str = photos.IMMICH_URL
    photos_wait_s: float = 180.0
    pyinfra: tuple[str, ...] = PYINFRA


@dataclass
class Run:
    """One run's working state, shared by its steps."""

    box: Box
    request: StoredRequest
    session: aiohttp.ClientSession
    say: Callable[[str], None] = lambda message: None  # what the running step does now
    admin: Account | None = None
    bot: Account | None = None
    room: str = ""
    #: The assistant's container starting (:func:`_start_assistant`), begun once its account
    #: exists so that it starts while the family room is made; the assistant step awaits it.
    assistant_start: asyncio.Future[None] | None = None

    @property
    def homeserver(self) -> Homeserver:
        return Homeserver(self.session, self.box.synapse_url)

    def settings(self) -> stack_config.Settings:
        form = self.request.form
        return stack_config.Settings(self.request.server_name,
                                     tailscale_auth_key=form.tailscale_auth_key,
                                     timezone=form.timezone, language=form.language)


async def _secrets(run: Run) -> str:
    made = stack_config.ensure_secrets(run.box.config_dir, (stack_config.BOT_SECRET,))
    token = run.box.state_dir / API_TOKEN_FILE
    if not token.exists():  # for the family's scripts; /admin shows it
        write_atomic(token, secrets.token_urlsafe(32).encode() + b"\n", mode=0o600)
        made += 1
    return f"made {made} new secrets" if made else "kept the secrets made earlier"


async def _config(run: Run) -> str:
    reapply.save_settings(run.settings(), run.box.config_dir)  # the deploy's input
    # The host's clock and pretty name are set while the deploy runs: neither needs the
    # other, and the deploy is most of the family's wait in this step.
    form = run.request.form
    host = asyncio.ensure_future(set_host(run.box.set_timezone, run.box.set_pretty_name,
                                          form.timezone, form.family_name))
    try:
        applied = await run_deploy(run.box.config_dir, pyinfra=run.box.pyinfra,
                                   on_operation=run.say)
    except BaseException:
        # The deploy's failure is the one the family sees, not the host's after it.
        await asyncio.gather(host, return_exceptions=True)
        raise
    said = await host
    return f"server {run.request.server_name}: {applied.summary()}; {said}"


async def _command(argv: Sequence[str], what: str, hint: str, *, tries: int = 1,
                   wait_s: float = 0.0) -> None:
    """Run ``argv`` until it succeeds, at most ``tries`` times, ``wait_s`` seconds apart.

    Raises:
        MemuError: the last try failed (its last line of stderr is in the message).
    """
    for attempt in range(1, tries + 1):
        done = await run_async(argv, time_limit_s=3600)
        if done.returncode == 0:
            return
        log.error("%s failed (exit %d, try %d of %d): %s", " ".join(argv), done.returncode,
                  attempt, tries, done.stderr_tail())
        if attempt < tries:
            await asyncio.sleep(wait_s)
    raise MemuError(f"{what} failed: {done.stderr_tail(1) or done.returncode}", hint=hint)


async def _database(run: Run) -> str:
    await _command(run.box.start_stack, "starting the services",
                   "press Retry; the box's page shows which service did not start")
    return "the services are running"


async def _chat_server(run: Run) -> str:
    deadline = time.monotonic() + run.box.wait_s
    url = run.box.synapse_url.rstrip("/") + "/health"
    last = ""
    while time.monotonic() < deadline:
        try:
            async with run.session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status == 200:
                    return "the chat server answers"
                last = f"it answered {r.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            last = str(e) or type(e).__name__
        await asyncio.sleep(1.0)
    raise MemuError(f"the chat server did not start within {run.box.wait_s:.0f} seconds "
                    f"({last})", hint="press Retry; if it fails again, restart the box")


async def _accounts(run: Run) -> str:
    secret = stack_config.load_secrets(run.box.config_dir, (stack_config.BOT_SECRET,))
    form = run.request.form
    hs = run.homeserver
    # The assistant's account first: its container's start (the longest part of what follows)
    # then runs while the family's account and room are made.
    run.bot = await hs.ensure_account(secret["synapse-registration"], BOT_USERNAME,
                                      secret[stack_config.BOT_SECRET])
    begin_assistant(run, run.bot)
    run.admin = await hs.ensure_account(secret["synapse-registration"], form.admin_username,
                                        form.admin_password, admin=True)
    return f"{run.admin.user_id} (admin) and {run.bot.user_id} (the assistant)"


async def _family_room(run: Run) -> str:
    if run.admin is None or run.bot is None:
        raise MemuError("the accounts step did not run")
    hs = run.homeserver
    run.room = await hs.ensure_family_room(run.admin, run.request.server_name,
                                           run.request.form.family_name, (run.bot.user_id,))
    await hs.join(run.bot, run.room)
    return f"{run.request.form.family_name} (#family:{run.request.server_name})"


async def _start_assistant(run: Run, bot: Account) -> None:
    """Record the assistant's account for its container, then start what is configured but
    not running (the assistant). It needs its account only: the family room it is joined to
    by the apply, whenever it starts.

    Raises:
        MemuError: the stack would not start it (after ``reload_tries`` tries).
        OSError: the account cannot be written.
    """
    stack_config.write_bot_account(run.box.config_dir, bot.user_id, bot.access_token,
                                   bot.device_id)
    # Compose starts the assistant only once PostgreSQL and Synapse report healthy; on a
    # busy box (the setup has just made accounts and is making the room) a health check can
    # time out once, and `up` then fails for a moment that passes: try again before giving up.
    await _command(run.box.reload_stack, "starting the assistant",
                   "press Retry; the box's page shows whether the assistant is running",
                   tries=run.box.reload_tries, wait_s=run.box.reload_wait_s)


def begin_assistant(run: Run, bot: Account) -> asyncio.Future[None]:
    """Begin starting the assistant's container for ``bot`` (:func:`_start_assistant`) in
    the background, once per run, and return that start: the accounts step begins it, the
    assistant step waits for it."""
    if run.assistant_start is None:
        run.assistant_start = asyncio.ensure_future(_start_assistant(run, bot))
    return run.assistant_start


async def _assistant(run: Run) -> str:
    if run.bot is None:
        raise MemuError("the accounts step did not run")
    await begin_assistant(run, run.bot)
    return "the assistant is starting"


async def _remote_access(run: Run) -> str:
    if not run.request.form.tailscale_auth_key:
        raise Skipped("no Tailscale key given; it can be added later")
    verdict = await remote.wait(run.box.tailscale_socket, run.box.remote_wait_s)
    if verdict.state is not remote.Remote.CONNECTED:
        raise Later(verdict.message)
    return verdict.message


async def _photos(run: Run) -> str:
    form = run.request.form
    verdict = await photos.ensure_admin(
        run.session, run.box.immich_url, run.box.state_dir,
        f"@{form.admin_username}:{run.request.server_name}", form.admin_password,
        run.box.photos_wait_s)
    if verdict.state in (photos.Photos.MADE, photos.Photos.MINE):
        return verdict.message
    if verdict.state is photos.Photos.TAKEN:
        raise Later(f"{verdict.message}; chat and the assistant are not affected")
    raise Later(f"{verdict.message}: they are downloaded once the box is online; sign in to "
                "the box's admin page once they are there, and the box makes your photos "
                "account")


STEPS: tuple[Step[Run], ...] = (
    Step("secrets", "Secrets", _secrets),
    Step("config", "Configuration", _config),
    Step("database", "Database", _database),
    Step("chat-server", "Chat server", _chat_server),
    Step("accounts", "Accounts", _accounts),
    Step("family-room", "Family room", _family_room),
    Step("assistant", "Assistant", _assistant),
    Step("photos", "Photos", _photos),
    Step("remote-access", "Remote access", _remote_access),
)


def finish_setup(state_dir: Path, admin: str) -> None:
    """Mark the box set up (the marker last, atomically, naming the ``admin``'s user ID)
    and delete the stored request and the setup code: both are useless now and one holds a
    password.

    Raises:
        OSError: the marker cannot be written.
    """
    write_json_atomic(state_dir / SETUP_DONE_MARKER, {"at": time.time(), "admin": admin},
                      mode=0o644)
    for name in (REQUEST_FILE, TOKEN_FILE):
        (state_dir / name).unlink(missing_ok=True)


async def apply(box: Box, steps: Sequence[Step[Run]] = STEPS) -> bool:
    """Run the whole apply for the request stored in ``box.state_dir``.

    Returns:
        True when the box is set up.

    Raises:
        MemuError: there is no readable stored request.
    """
    request = load_request(box.state_dir)
    if request is None:
        raise MemuError("there is no setup request on the box",
                        hint="fill in the setup page again")
    progress = Progress(box.state_dir / PROGRESS_FILE, steps)
    async with aiohttp.ClientSession() as session:
        run = Run(box, request, session, say=progress.say)
        ok = await run_steps(run, steps, progress)
        if (start := run.assistant_start) is not None and not ok:
            # A step between the accounts and the assistant failed: stop waiting for the
            # start (systemd's reload job runs on; Retry reloads again) and read how it
            # ended, so that nothing is left unread.
            start.cancel()
            await asyncio.wait([start])
            if not start.cancelled() and (error := start.exception()) is not None:
                log.info("the assistant's start ended: %s", error)
    if ok:
        finish_setup(box.state_dir,
                     f"@{request.form.admin_username}:{request.server_name}")
        progress.finish(RunState.DONE)
    return ok


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring for the exit status)."""
    ap = argparse.ArgumentParser(prog="memu-setup-apply", description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", type=Path, default=STATE_DIR)
    ap.add_argument("--config", type=Path, default=stack_config.CONFIG_DIR)
    ap.add_argument("--synapse", default=SYNAPSE_URL)
    ap.add_argument("--start-stack", nargs="+", help="command that starts the stack")
    ap.add_argument("--reload-stack", nargs="+",
                    help="command that starts what is configured but not running")
    ap.add_argument("--set-timezone", nargs="+",
                    help="command that sets the host's time zone (the zone is appended)")
    ap.add_argument("--set-pretty-name", nargs="+",
                    help="command that sets the host's pretty name (the name is appended)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    box = Box(state_dir=args.state_dir, config_dir=args.config, synapse_url=args.synapse)
    if args.start_stack:
        box = dataclasses.replace(box, start_stack=tuple(args.start_stack))
    if args.reload_stack:
        box = dataclasses.replace(box, reload_stack=tuple(args.reload_stack))
    if args.set_timezone:
        box = dataclasses.replace(box, set_timezone=tuple(args.set_timezone))
    if args.set_pretty_name:
        box = dataclasses.replace(box, set_pretty_name=tuple(args.set_pretty_name))
    try:
        return 0 if asyncio.run(apply(box)) else 1
    except MemuError as e:
        print(f"memu: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
