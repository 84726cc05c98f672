"""Photos' administrator (memu_firstboot.photos and the apply's photos step), against a
stand-in for Immich's first-account API on a loopback port (memu_dev.immich_api: the Immich
image is a registry image that cannot be fetched here). The container stand-in's same routes
meet nginx in tests/stack/test_family_stack.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from memu_common import MemuError
from memu_dev.immich_api import Immich
from memu_firstboot import apply, photos, progress
from memu_firstboot.form import SetupRequest
from memu_firstboot.photos import Photos

EMAIL = "ada@memu.local"
PASSWORD = "purple-kettle-sings"


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(immich: Immich) -> str:
        runner = web.AppRunner(immich.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def closed_port() -> str:
    return "http://127.0.0.1:9"  # discard: nothing listens on the test hosts


async def make(url: str, email: str = EMAIL, password: str = PASSWORD) -> photos.Verdict:
    async with aiohttp.ClientSession() as session:
        return await photos.make_admin(session, url, email, "ada", password)


def test_the_email_is_the_chat_name_at_the_server() -> None:
    assert photos.photos_email("@ada.apply:memu.local") == "ada.apply@memu.local"


async def test_made_once_then_known_as_the_box_s_own(serve: Any) -> None:
    immich = Immich()
    url = await serve(immich)
    made = await make(url)
    assert made.state is Photos.MADE and EMAIL in made.message
    assert immich.admin == {"email": EMAIL, "password": PASSWORD, "name": "ada"}
    again = await make(url)
    assert again.state is Photos.MINE and immich.sign_ups == 1
    assert immich.logouts == 1  # the session made to check is ended


async def test_someone_else_s_administrator_is_said(serve: Any) -> None:
    immich = Immich()
    url = await serve(immich)
    await make(url, email="neighbour@example.org", password="mine now")
    taken = await make(url)
    assert taken.state is Photos.TAKEN and "did not make" in taken.message


async def test_a_sign_up_race_ends_in_a_look_at_who_won(serve: Any) -> None:
    immich = Immich(race=True)
    url = await serve(immich)
    await make(url)  # the box's own, e.g. a sign-in while the apply ran
    immich.race = True
    assert (await make(url)).state is Photos.MINE


async def test_not_there_and_starting_are_told_apart(serve: Any) -> None:
    assert (await make(closed_port())).state is Photos.NOT_RUNNING
    immich = Immich(starting=3)
    url = await serve(immich)
    assert (await make(url)).state is Photos.STARTING
    async with aiohttp.ClientSession() as session:
        waited = await photos.wait_and_make_admin(session, url, EMAIL, "ada", PASSWORD, 30,
                                                  every_s=0.05)
        assert waited.state is Photos.MADE
        gone = await photos.wait_and_make_admin(session, closed_port(), EMAIL, "ada",
                                                PASSWORD, 30)
        assert gone.state is Photos.NOT_RUNNING  # at once, not after 30 s


async def test_a_refusal_is_said_in_immich_s_words(serve: Any) -> None:
    url = await serve(Immich())
    with pytest.raises(MemuError, match="email must be an email") as e:
        await make(url, email="ada")
    assert "admin page" in (e.value.hint or "")


@pytest.mark.parametrize("running", [True, False])
async def test_the_setup_step(serve: Any, tmp_path: Path, running: bool) -> None:
    """Immich running: done, and the account recorded for the pages; not there yet: left
    for later (the box works without photos) with what makes it."""
    url = await serve(Immich()) if running else closed_port()
    box = apply.Box(state_dir=tmp_path, immich_url=url, photos_wait_s=10)
    form = SetupRequest("The Okafors", "ada", PASSWORD, "Etc/UTC", "en")
    steps = [s for s in apply.STEPS if s.name == "photos"]
    prog = progress.Progress(tmp_path / progress.PROGRESS_FILE, steps)
    async with aiohttp.ClientSession() as session:
        run = apply.Run(box, apply.StoredRequest(form, "memu.local"), session)
        assert await progress.run_steps(run, steps, prog)
    step = prog.body["steps"][0]
    if running:
        assert (step["state"], photos.recorded(tmp_path)) == ("done", EMAIL)
        assert json.loads((tmp_path / photos.RECORD_FILE).read_text())["email"] == EMAIL
    else:
        assert step["state"] == "later" and photos.recorded(tmp_path) is None
        assert "sign in to the box's admin page" in step["message"]
