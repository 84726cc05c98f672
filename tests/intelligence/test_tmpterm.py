"""Exactly one effect per message across kills (issue 11, class 2): the bot's real entry point
(``python -m memu_intelligence``, configured by its environment as in its container) is
killed, with SIGKILL and SIGTERM, at seeded points of a burst of commands, and started
again; in the end every command was answered once and changed the list once.

The seed is printed and can be given as ``MEMU_KILL_SEED`` to repeat a run's kill points.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bot_matrix import TestUser

from memu_dev.paths import REPO
from memu_intelligence.config import Config

pytestmark = pytest.mark.services

BURST = 40
KILLS = 10
SEED = int(os.environ.get("MEMU_KILL_SEED", "20261204"))


class BotProcess:
    """The bot as its container runs it: a process with MEMU_BOT_* in its environment."""

    def __init__(self, cfg: Config, log: Path) -> None:
        self.env = {**os.environ,
                    "PYTHONFAULTHANDLER": "1", "PYTHONPATH": os.pathsep.join(str(REPO / p)
                                                  for p in ("intelligence", "common")),
                    **{f"MEMU_BOT_{k.upper()}": str(v)
                       for k, v in dataclasses.asdict(cfg).items() if v != ""}}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "memu_intelligence"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        t0 = __import__("time").monotonic()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT); self.proc.wait(timeout=30); raise
        print("exit took", round(__import__("time").monotonic() - t0, 2), flush=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill(signal.SIGKILL)


async def test_kills_during_a_burst_lose_nothing_and_repeat_nothing(
    bot_config: Config, alice: TestUser, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    points = sorted(rng.sample(range(1, BURST), KILLS))
    plan = [(k, signal.SIGTERM,
             round(rng.uniform(0.0, 1.5), 2)) for k in points]
    print(f"kill plan (MEMU_KILL_SEED={SEED}): " + ", ".join(
        f"{sig.name} {delay} s after message {k}" for k, sig, delay in plan))
    bot = BotProcess(bot_config, tmp_path / "bot.log")
    bot.start()
    try:
        room = await alice.room_with_bot(bot_config.user_id)
        await alice.ask(room, "/help", deadline=60)
        kills = {k: (sig, delay) for k, sig, delay in plan}
        sent = []
        for i in range(BURST):
            sent.append(await alice.say(room, f"/list add burst item {i:02d}"))
            if i in kills:
                sig, delay = kills[i]
                await asyncio.sleep(delay)
                bot.kill(sig)
                bot.start()
        shown = await alice.ask(room, "/list show burst", deadline=240)
        items = shown.split("burst:\n", 1)[1].splitlines()
        assert items == [f"{i + 1}. item {i:02d}" for i in range(BURST)], shown
        replies = await alice.replies(room, bot_config.user_id)
        assert {i: len(replies.get(i, [])) for i in sent} == dict.fromkeys(sent, 1)
    except BaseException:
        print(bot.log.read_text(errors="replace")[-6000:])
        raise
    finally:
        bot.stop()
        text = bot.log.read_text(errors="replace")
        if "did not stop" in text:
            print("HANG-DUMP\n" + text[-20000:])
