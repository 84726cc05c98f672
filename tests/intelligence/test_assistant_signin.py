"""The box signs a signed-out assistant back in (memu_agent.assistant), against the real
Synapse and the real bot: the bot's token is revoked, its health check says "signed out",
the agent's watch signs it in with the password setup made, records the new session where
setup does, and "reloads the stack" (here: restarts the bot from the recorded account, as
Compose re-creates the container with its new environment); the family's /help is answered
again. A changed password is reset through the admin API first; a deactivated account is
left alone. Beside the bot's tests to share their Synapse and database."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from bot_matrix import BotRunner, TestUser, check_heartbeat, wait_for_file

from memu_agent.assistant import Session, Watch
from memu_common import MemuError
from memu_common.files import read_env_file, write_atomic
from memu_dev import matrix
from memu_dev.services import Synapse
from memu_firstboot import stack_config
from memu_firstboot.provision import Account, Homeserver
from memu_intelligence.config import Config

pytestmark = pytest.mark.services


async def _set_up_assistant(synapse: Synapse, config_dir: Path) -> tuple[Account, str]:
    """An assistant account as setup leaves it in ``config_dir``: its password and the
    registration secret under ``secrets/``, its session in ``account.env``; returns the
    session and the password."""
    password = os.urandom(12).hex()
    async with aiohttp.ClientSession() as http:
        made = await Homeserver(http, synapse.url).register(
            synapse.secret, f"memu-{os.urandom(3).hex()}", password)
    for name, value in ((stack_config.BOT_PASSWORD, password),
                        (stack_config.REGISTRATION_SECRET, synapse.secret)):
        write_atomic(config_dir / name, value.encode(), mode=0o600)
    stack_config.write_bot_account(config_dir, made.user_id, made.access_token,
                                   made.device_id)
    return made, password


async def test_a_signed_out_assistant_is_signed_back_in_by_the_box(
    bot_config: Config, synapse: Synapse, alice: TestUser, tmp_path: Path
) -> None:
    config_dir = tmp_path / "stack"
    made, password = await _set_up_assistant(synapse, config_dir)

    def recorded() -> Config:
        account = read_env_file(config_dir / stack_config.BOT_ACCOUNT)
        return bot_config.replace(user_id=account["MEMU_BOT_USER_ID"],
                                  access_token=account["MEMU_BOT_ACCESS_TOKEN"],
                                  device_id=account["MEMU_BOT_DEVICE_ID"])

    runner = BotRunner(recorded())
    reloads = 0

    async def reload_stack() -> None:
        nonlocal reloads
        reloads += 1
        await runner.stop()
        runner.cfg = recorded()
        await runner.start()

    watch = Watch(config_dir, synapse.url, reload_stack)
    await runner.start()
    try:
        room = await alice.room_with_bot(made.user_id)
        assert "/remember" in await alice.ask(room, "/help")
        verdict = await watch.check()
        assert verdict.session is Session.SIGNED_IN and reloads == 0, verdict

        # Signed out (its session ended, e.g. "sign out all sessions" in a client).
        await asyncio.to_thread(matrix.sign_out, synapse.url, made.access_token)
        beat = Path(bot_config.heartbeat_file)
        await asyncio.to_thread(wait_for_file, beat.with_name(beat.name + ".problem"), 60)
        assert "signed out" in check_heartbeat(str(beat)).stderr
        verdict = await watch.check()
        assert verdict.session is Session.SIGNED_IN and reloads == 1, verdict
        assert "signed it back in" in verdict.message and verdict.signed_in_again_at
        assert runner.cfg.access_token != made.access_token
        assert "/remember" in await alice.ask(room, "/help")
        assert check_heartbeat(str(beat)).returncode == 0  # the problem went with the sync
        assert watch.snapshot()["session"] == "signed-in"

        # Someone changed its password (ending its sessions): the box resets it to its own.
        async with aiohttp.ClientSession() as http:
            hs = Homeserver(http, synapse.url)
            admin_user = synapse.register(f"admin-{os.urandom(3).hex()}", admin=True)
            admin = Account(admin_user.user_id, admin_user.access_token, admin_user.device_id)
            await hs.set_password(admin, made.user_id, "someone-elses-password")
            verdict = await watch.check()
            assert verdict.session is Session.SIGNED_IN and reloads == 2, verdict
            assert "/remember" in await alice.ask(room, "/help")
            assert (await hs.login(made.user_id[1:].split(":")[0], password)).user_id == (
                made.user_id)

            # Deactivated on purpose: left alone, and the status says so.
            await hs.remove_member(admin, made.user_id)
        verdict = await watch.check()
        assert verdict.session is Session.REMOVED and reloads == 2, verdict
        assert "removed" in watch.snapshot()["message"]  # type: ignore[operator]
        before = await _accounts_ever(synapse, admin)
        assert (await watch.check()).session is Session.REMOVED
        assert await _accounts_ever(synapse, admin) == before  # no throw-away admin each time
    finally:
        await runner.stop()


async def _accounts_ever(synapse: Synapse, admin: Account) -> int:
    """How many accounts the server has, deactivated ones included (Synapse's admin API,
    ``GET /_synapse/admin/v2/users``)."""
    async with aiohttp.ClientSession() as http, http.get(
            f"{synapse.url}/_synapse/admin/v2/users?deactivated=true&limit=1",
            headers={"Authorization": f"Bearer {admin.access_token}"}) as r:
        assert r.status == 200
        return int((await r.json())["total"])


async def test_before_setup_and_without_the_chat_server(tmp_path: Path) -> None:
    watch = Watch(tmp_path, "http://127.0.0.1:9")
    assert (await watch.check()).session is Session.NOT_SET_UP
    stack_config.write_bot_account(tmp_path, "@memu:memu.test", "token", "DEV")
    verdict = await watch.check()
    assert verdict.session is Session.UNKNOWN and "could not ask" in verdict.message


async def test_a_failed_restart_is_tried_again_though_the_new_token_works(
    synapse: Synapse, tmp_path: Path
) -> None:
    """The box made a new session but the stack's reload failed: the recorded token is
    valid, yet the running assistant still has the old one, so the next check reloads."""
    made, _ = await _set_up_assistant(synapse, tmp_path)
    attempts = []

    async def reload_stack() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise MemuError("reloading the stack failed: Docker is not running")

    watch = Watch(tmp_path, synapse.url, reload_stack)
    await asyncio.to_thread(matrix.sign_out, synapse.url, made.access_token)
    failed = await watch.check()
    assert failed.session is Session.SIGNED_OUT and "could not restart" in failed.message
    assert watch.next_wait_s() == 120
    again = await watch.check()
    assert again.session is Session.SIGNED_IN and len(attempts) == 2, again
    assert (await watch.check()).session is Session.SIGNED_IN and len(attempts) == 2


@pytest.mark.parametrize(("failures", "wait_s"), [(0, 60), (1, 120), (5, 1800), (30, 1800)])
def test_failed_sign_ins_back_off(failures: int, wait_s: float, tmp_path: Path) -> None:
    watch = Watch(tmp_path, "http://127.0.0.1:9")
    watch._failures = failures
    assert watch.next_wait_s() == wait_s
