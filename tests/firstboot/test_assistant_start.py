"""The apply starts the assistant's container as soon as its account exists, so that it
starts while the family room is made; the assistant step waits for that start and reports
it (here the stack's reload is a script that records its call: firstboot_fixtures)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from firstboot_fixtures import recorder, script

from memu_common import MemuError
from memu_firstboot import apply, progress, stack_config
from memu_firstboot.form import SetupRequest
from memu_firstboot.provision import Account

BOT = Account("@memu:memu.local", "token-1", "DEVICE1")


def make_box(tmp_path: Path, reload_stack: tuple[str, ...]) -> apply.Box:
    """A box whose stack reload is ``reload_stack``, tried once."""
    box = apply.Box(state_dir=tmp_path / "state", config_dir=tmp_path / "config",
                    reload_stack=reload_stack, reload_tries=1)
    box.state_dir.mkdir()
    box.config_dir.mkdir()
    return box


def three_steps(family_room: Callable[[apply.Run], Awaitable[str]]
                ) -> tuple[progress.Step[apply.Run], ...]:
    """Accounts (the bot's made: begin its start), ``family_room``, the real assistant step."""
    async def accounts(run: apply.Run) -> str:
        run.bot = BOT
        apply.begin_assistant(run, BOT)
        return "made"

    return (progress.Step("accounts", "Accounts", accounts),
            progress.Step("family-room", "Family room", family_room),
            next(s for s in apply.STEPS if s.name == "assistant"))


async def run_three_steps(tmp_path: Path, status: int) -> tuple[dict[str, Any], bool]:
    """The three steps with a family room that lasts until the reload has run (or 10 s);
    the progress body and whether the room step saw the reload while it ran."""
    log = tmp_path / "reloads"
    box = make_box(tmp_path, (*recorder(tmp_path / "reload", log, status), "reload",
                              "memu-stack.service"))
    seen = False

    async def family_room(run: apply.Run) -> str:
        nonlocal seen
        for _ in range(200):  # 10 s at most: a file written by another process
            if seen := log.exists():
                break
            await asyncio.sleep(0.05)
        return "made"

    steps = three_steps(family_room)
    prog = progress.Progress(box.state_dir / progress.PROGRESS_FILE, steps)
    form = SetupRequest("The Okafors", "ada", "purple-kettle-sings", "Europe/Berlin", "de-DE")
    async with aiohttp.ClientSession() as session:
        run = apply.Run(box, apply.StoredRequest(form, "memu.local"), session)
        await progress.run_steps(run, steps, prog)
    return prog.body, seen


async def test_the_assistant_starts_while_the_family_room_is_made(tmp_path: Path) -> None:
    body, seen = await run_three_steps(tmp_path, 0)
    assert seen, "the reload did not run while the family room was being made"
    assert [s["state"] for s in body["steps"]] == ["done", "done", "done"]
    assert body["steps"][2]["message"] == "the assistant is starting"
    assert (tmp_path / "reloads").read_text() == "reload memu-stack.service\n"  # once
    account = (tmp_path / "config" / stack_config.BOT_ACCOUNT).read_text()
    assert "MEMU_BOT_USER_ID=@memu:memu.local" in account


async def test_a_start_that_fails_fails_the_assistant_step(tmp_path: Path) -> None:
    body, _ = await run_three_steps(tmp_path, 1)
    assert [s["state"] for s in body["steps"]] == ["done", "done", "failed"]
    assert body["steps"][2]["message"].startswith("starting the assistant failed")


async def test_a_failed_step_before_the_assistant_stops_waiting_for_its_start(
        tmp_path: Path) -> None:
    """The family room fails while the start is still running: the run ends failed at
    once (the reload's client is stopped, not waited for) and the assistant step never ran;
    Retry runs it all again."""
    log = tmp_path / "reloads"
    # One process (no shell with a child holding the pipes): SIGTERM ends it at once.
    box = make_box(tmp_path, script(
        tmp_path / "reload", f"#!{sys.executable}\nimport time\ntime.sleep(30)\n"
                             f"open({str(log)!r}, 'a').write('reloaded\\n')\n"))

    async def family_room(run: apply.Run) -> str:
        await asyncio.sleep(0.5)  # the reload has begun
        raise MemuError("the family room could not be made")

    steps = three_steps(family_room)
    form = SetupRequest("The Okafors", "ada", "purple-kettle-sings", "Europe/Berlin", "de-DE")
    apply.save_request(box.state_dir, apply.StoredRequest(form, "memu.local"))
    started = asyncio.get_running_loop().time()
    assert not await apply.apply(box, steps)
    assert asyncio.get_running_loop().time() - started < 20
    body = json.loads((box.state_dir / progress.PROGRESS_FILE).read_text())
    assert [s["state"] for s in body["steps"]] == ["done", "failed", "waiting"]
    assert body["state"] == "failed"
    assert not log.exists()
