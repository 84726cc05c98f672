"""The first-boot flow in the browser: the setup form, the claim, the apply's progress and the
ready page. The pages are :mod:`memu_firstboot`'s templates; the claim, the sessions and the
apply's child process are the agent's.

Routes (access as enforced by :mod:`memu_agent.auth`):
    ``GET /`` (open): the setup form (pre-filled from ``Accept-Language``), or the "set up"
        page once the box is set up.
    ``GET /setup/claim?code=<setup code>`` (claim): the QR code on the box's screen. The
        code claims the box for this browser and the answer redirects (303) to ``/``, so
        the code does not stay in the address bar or history; a wrong one counts as a wrong
        try (429 back-off) and shows the form with the message.
    ``POST /setup`` (claim): the form (``application/x-www-form-urlencoded``, with the CSRF
        token and, from a browser without the claim session, the ``setup_code`` field, which
        claims the box). Errors: the form again (400) with a message next to each field;
        fine: the request is stored, the apply starts, 303 to ``/setup/progress``.
    ``GET /setup/progress`` (open): each step with its state and seconds; refreshes itself
        every 2 s while running (no script needed); Retry when a step failed or the run was
        cut off (a power cut, a crash). Shows no secret.
    ``POST /setup/retry`` (claim): runs the apply again with the stored request.
    ``GET /setup/ready`` (open, after setup): how to sign in, the server name, the links.
    ``GET /api/setup`` (open): the progress as JSON (:mod:`memu_firstboot.progress`,
        ``state`` also ``interrupted``), ``{"state": "not started"}`` before any run.

Why the progress and ready pages are open: they show no secret (step names, plain-words
results, the server name and links), and after setup the claim session no longer counts,
so a claim-only page could not show the family that setup finished.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from memu_agent import claim_api, csrf
from memu_agent.auth import AUTH, CODE_FIELD, code_in_link, on_refusal
from memu_agent.facts import local_name
from memu_agent.pages import form_page, photos_url, see_other, sentence
from memu_agent.sessions import COOKIE, SessionKind
from memu_agent.tailnet import remote_url
from memu_common import optional
from memu_common.access import Access, add_route
from memu_common.files import read_env_file, read_json_object
from memu_firstboot import apply, form, photos, progress, stack_config
from memu_firstboot.state import setup_admin
from memu_firstboot.web import PAGE_INFO, is_set_up, respond

log = logging.getLogger(__name__)

#: Words for a step's state on the page.
STEP_WORDS = {progress.StepState.WAITING: "waiting", progress.StepState.RUNNING: "working…",
              progress.StepState.DONE: "done", progress.StepState.FAILED: "failed",
              progress.StepState.SKIPPED: "skipped", progress.StepState.LATER: "later"}
#: Language tags offered in the form's list (any ``ll`` or ``ll-CC`` is accepted).
LANGUAGES = ("en", "en-GB", "en-US", "en-IE", "en-AU", "en-CA", "en-IN", "en-NG", "en-ZA",
             "de-DE", "de-AT", "de-CH", "fr-FR", "fr-BE", "fr-CA", "es-ES", "es-MX", "it-IT",
             "nl-NL", "nl-BE", "pt-PT", "pt-BR", "pl-PL", "cs-CZ", "sv-SE", "da-DK", "nb-NO",
             "fi-FI", "el-GR", "tr-TR", "ro-RO", "hu-HU", "uk-UA", "ru-RU", "ar", "he-IL",
             "hi-IN", "bn-BD", "ur-PK", "yo-NG", "ig-NG", "ha-NG", "sw-KE", "zh-CN", "zh-TW",
             "ja-JP", "ko-KR", "vi-VN", "th-TH", "id-ID", "ms-MY", "fil-PH")
_ZONES = (*sorted(z for z in zoneinfo.available_timezones() if "/" in z
                  and not z.startswith(("Etc/", "SystemV/", "posix/", "right/"))), "Etc/UTC")
_PASSWORDS = ("admin_password", form.CONFIRM_FIELD, "tailscale_auth_key", CODE_FIELD,
              csrf.FIELD)


class SetupRunner:
    """The apply's child process (``python3 -m memu_firstboot.apply``), one at a time.

    Args:
        state_dir: the agent's state directory (request and progress files).
        command: the apply's command line (tests run it with other parts of the box).
        config_dir: the stack's configuration the apply writes (the ready page reads the
            server name there).
        on_exit: called with the apply's exit status when it ends (the agent redraws the
            console greeting: the setup code is gone once the box is set up).
    """

    def __init__(self, state_dir: Path, command: Sequence[str] | None = None,
                 config_dir: Path = stack_config.CONFIG_DIR,
                 on_exit: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.state_dir = state_dir
        self.config_dir = config_dir
        self.on_exit = on_exit
        self.command = list(command or (sys.executable, "-m", "memu_firstboot.apply",
                                        "--state-dir", str(state_dir)))
        self._proc: asyncio.subprocess.Process | None = None
        self._reaper: asyncio.Task[int] | None = None

    def running(self) -> bool:
        """Whether an apply this agent started is still running."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the apply unless one runs; its output goes to the agent's journal.

        Raises:
            OSError: the command cannot be started.
        """
        if self.running():
            return
        self._proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.DEVNULL)
        self._reaper = asyncio.create_task(self._reap(self._proc))
        log.info("setup apply started (pid %d)", self._proc.pid)

    async def _reap(self, proc: asyncio.subprocess.Process) -> int:
        status = await proc.wait()
        log.info("setup apply ended (exit status %d)", status)
        if self.on_exit is not None:
            try:
                await self.on_exit(status)
            except Exception:  # the apply's result stands; the greeting is cosmetic
                log.exception("after the setup apply")
        return status

    async def stop(self) -> None:
        """Stop a running apply (the agent is shutting down); the next start completes it."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()

    def progress(self) -> dict[str, Any]:
        """The progress file as written by the apply, with ``state`` ``interrupted`` when it
        says ``running`` but no apply runs (the box lost power or the agent restarted), and
        ``running`` with the old steps while a new run has not written its own yet."""
        body = read_json_object(self.state_dir / progress.PROGRESS_FILE)
        if body is None:
            return {"state": "running", "steps": []} if self.running() else {
                "state": "not started", "steps": []}
        if not isinstance(body.get("steps"), list):
            body["steps"] = []
        if self.running():
            body["state"] = progress.RunState.RUNNING
        elif body.get("state") == progress.RunState.RUNNING:
            body["state"] = progress.RunState.INTERRUPTED
        return body


RUNNER = web.AppKey("memu_agent.setup_pages.runner", SetupRunner)


def _claim_session(request: web.Request) -> bool:
    token = request.cookies.get(COOKIE)
    return token is not None and request.app[AUTH].sessions.kind_of(token) is SessionKind.CLAIM


def server_name(request: web.Request) -> str:
    """The Matrix server name setup fixes: the box's LAN name, ``<hostname>.local`` (what
    phones on the home network resolve by mDNS). Permanent once accounts exist."""
    return local_name(request.app[PAGE_INFO].hostname)


def _form_page(request: web.Request, *, status: int = 200,
               values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
               claimed: bool | None = None, prefilled: bool = False) -> web.Response:
    return form_page(
        request, "setup.html", status=status, values=values or {}, errors=errors or {},
        claimed=_claim_session(request) if claimed is None else claimed,
        server_name=server_name(request), zones=_ZONES,
        languages=LANGUAGES, min_password=form.MIN_PASSWORD, prefilled=prefilled)


async def index(request: web.Request) -> web.StreamResponse:
    """``GET /``: see the module docstring."""
    if is_set_up(request):
        return respond(request, "done.html")
    if _claim_session(request) and request.app[RUNNER].running():
        return see_other("/setup/progress")  # a failed run's page links here to change answers
    values = form.prefill(request.headers.get("Accept-Language", ""))
    return _form_page(request, values=values, prefilled=True)


async def claim_link(request: web.Request) -> web.StreamResponse:
    """``GET /setup/claim``: see the module docstring (the auth layer checked the code)."""
    try:
        token = claim_api.claim(request.app)
    except OSError:
        return _form_page(request, status=500, errors={
            "form": "The box could not store the claim; try again in a minute."})
    resp = see_other("/")
    claim_api.set_session_cookie(request, resp, token)
    return resp


def _kept_values(data: dict[str, Any]) -> dict[str, str]:
    """What the form shows again after an error: what was typed, never a secret."""
    return {k: v for k, v in data.items() if isinstance(v, str) and k not in _PASSWORDS}


async def post_setup(request: web.Request) -> web.StreamResponse:
    """``POST /setup``: see the module docstring."""
    runner = request.app[RUNNER]
    if runner.running():
        return see_other("/setup/progress")
    data = dict(await request.post())
    claimed = _claim_session(request)
    checked, errors = form.check(data)
    if checked is None:
        # The code was right (the auth layer checked it): claim now, so it need not be typed
        # again while the family fixes the other fields.
        resp = _form_page(request, status=400, values=_kept_values(data), errors=errors,
                          claimed=True)
        if not claimed:
            try:
                claim_api.set_session_cookie(request, resp, claim_api.claim(request.app))
            except OSError:
                return _form_page(request, status=500, values=_kept_values(data), errors={
                    "form": "The box could not store the claim; try again in a minute."})
        return resp
    token = None
    try:
        if not claimed:
            token = claim_api.claim(request.app)
        apply.save_request(request.app[PAGE_INFO].state_dir,
                           apply.StoredRequest(checked, server_name(request)))
        await runner.start()
    except OSError as e:
        log.error("cannot start the setup: %s", e)
        return _form_page(request, status=500, values=_kept_values(data), errors={
            "form": "The box could not start the setup; try again in a minute."})
    resp = see_other("/setup/progress")
    if token is not None:
        claim_api.set_session_cookie(request, resp, token)
    return resp


async def _refused(request: web.Request, status: int, error: str, hint: str
                   ) -> web.StreamResponse:
    """How ``POST /setup``, ``POST /setup/retry`` and the QR link show a refusal: the form
    again."""
    if status == 410:
        return respond(request, "done.html", status=410)
    data = dict(await request.post()) if request.content_type.endswith("urlencoded") else {}
    if status == 429:
        errors = {CODE_FIELD: f"Too many wrong tries from this device: {hint}."}
    elif status == 401:
        errors = {CODE_FIELD: "Please type the setup code shown on the box's screen."}
    elif error == "wrong setup code":
        errors = {CODE_FIELD: "That is not this box's setup code: type the one shown on the "
                              "box's screen (dashes and spaces do not matter)."}
    else:
        errors = {"form": sentence(error, hint)}
    return _form_page(request, status=status, values=_kept_values(data), errors=errors)


async def progress_page(request: web.Request) -> web.StreamResponse:
    """``GET /setup/progress``: see the module docstring."""
    if is_set_up(request):
        return see_other("/setup/ready")
    body = request.app[RUNNER].progress()
    if body["state"] == "not started":
        return see_other("/")
    return form_page(request, "progress.html", state=body["state"], steps=body["steps"],
                     step_words=STEP_WORDS)


async def post_retry(request: web.Request) -> web.StreamResponse:
    """``POST /setup/retry``: see the module docstring."""
    runner = request.app[RUNNER]
    if apply.load_request(runner.state_dir) is None:
        return see_other("/")
    try:
        await runner.start()
    except OSError as e:
        log.error("cannot start the setup: %s", e)
    return see_other("/setup/progress")


async def ready_page(request: web.Request) -> web.StreamResponse:
    """``GET /setup/ready``: see the module docstring."""
    if not is_set_up(request):
        return see_other("/")
    env = read_env_file(request.app[RUNNER].config_dir / "stack.env")
    name = env.get("MEMU_SERVER_NAME") or server_name(request)
    return respond(request, "ready.html", server_name=name,
                   chat_url=f"{request.scheme}://{request.host}/",
                   photos_url=photos_url(request),
                   admin_url=f"{request.scheme}://{request.host}/admin",
                   remote_access=env.get(optional.env_name("tailscale")) == "on",
                   remote_url=remote_url(request),
                   photos_admin=photos.recorded(request.app[RUNNER].state_dir) or "",
                   photos_email=photos.photos_email(setup_admin(request.app[RUNNER].state_dir)
                                                    or f"@admin:{name}"))


async def api_setup(request: web.Request) -> web.Response:
    """``GET /api/setup``: see the module docstring."""
    body = request.app[RUNNER].progress()
    if is_set_up(request):
        body["state"] = progress.RunState.DONE
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def _stop_runner(app: web.Application) -> None:
    await app[RUNNER].stop()


def add_routes(app: web.Application, runner: SetupRunner) -> None:
    """Register the setup flow's routes except ``GET /`` (the front door routes ``/`` to
    :func:`index`); :mod:`memu_firstboot.web` must be mounted on ``app`` first."""
    app[RUNNER] = runner
    app.on_shutdown.append(_stop_runner)
    add_route(app, "POST", "/setup", post_setup, Access.CLAIM, name="setup-post")
    add_route(app, "POST", "/setup/retry", post_retry, Access.CLAIM, name="setup-retry")
    add_route(app, "GET", "/setup/claim", claim_link, Access.CLAIM, name="setup-claim")
    add_route(app, "GET", "/setup/progress", progress_page, Access.OPEN,
              name="setup-progress")
    add_route(app, "GET", "/setup/ready", ready_page, Access.OPEN, name="setup-ready")
    add_route(app, "GET", "/api/setup", api_setup, Access.OPEN, name="api-setup")
    on_refusal(app, post_setup, _refused)
    on_refusal(app, post_retry, _refused)
    on_refusal(app, claim_link, _refused)
    code_in_link(app, claim_link)
