"""The assistant under load: reply latency when 50 commands arrive at once over 5 rooms and
a fifth of them wait for a slow language model, against the same burst with an instant
model, in the same process, on the same services.

The bot runs in this process against a throwaway Synapse and PostgreSQL
(:mod:`memu_dev.services`) and the Ollama stand-in (:mod:`memu_dev.fake_ollama`), whose
chat answers take ``llm_seconds`` (embeddings stay instant, as a real model's nearly are).
A family member's client sends the burst and reads the replies; a reply's latency is its
``origin_server_ts`` minus its command's (both stamped by Synapse, so no client clock is
involved). Goal (issue 11): p95 at most 3 s for the commands that need no model.

    cd tools && python -m memu_dev.bench_recall   # runs this after the retrieval sizes
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import nio
import psycopg

from memu_dev.fake_ollama import FakeOllama
from memu_dev.services import Postgres, Synapse, free_port
from memu_intelligence.bot import Bot
from memu_intelligence.config import Config

GOAL_P95_S = 3.0
#: What a burst is made of, per room: two questions for the model, eight commands without.
SLOW = ["/recall what is the boiler code", "/recall when do the bins go out"]
FAST = ["/help", "/list add shopping milk", "/list show shopping", "/reminders",
        "/memories", "/list add shopping eggs, bread", "/remember the gate code is 1234",
        "/list show"]
DEADLINE_S = 180.0


@dataclass(frozen=True)
class Figures:
    """Reply latencies of one burst, in seconds: commands without and with the model."""

    fast: list[float]
    slow: list[float]

    @staticmethod
    def p(samples: list[float], q: int) -> float:
        """The ``q``-th percentile (inclusive method)."""
        return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


class _Family:
    """One family member's client: rooms with the bot, a burst of commands, the replies."""

    def __init__(self, homeserver: str, user_id: str, token: str, device: str) -> None:
        self.client = nio.AsyncClient(homeserver, user_id, device_id=device)
        self.client.access_token = token
        self.client.user_id = user_id

    async def room_with(self, bot_id: str) -> str:
        resp = await self.client.room_create(invite=[bot_id])
        assert isinstance(resp, nio.RoomCreateResponse), resp
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            members = await self.client.joined_members(resp.room_id)
            if isinstance(members, nio.JoinedMembersResponse) and bot_id in [
                    m.user_id for m in members.members]:
                return str(resp.room_id)
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the bot did not join {resp.room_id}")

    async def send(self, room: str, text: str) -> str:
        resp = await self.client.room_send(room, "m.room.message",
                                           {"msgtype": "m.text", "body": text})
        assert isinstance(resp, nio.RoomSendResponse), resp
        return str(resp.event_id)

    async def events(self, room: str) -> list[dict[str, Any]]:
        resp = await self.client.room_messages(room, limit=500,
                                               message_filter={"types": ["m.room.message"]})
        assert isinstance(resp, nio.RoomMessagesResponse), resp
        return [e.source for e in resp.chunk]

    async def burst(self, plan: list[tuple[str, str, bool]]) -> Figures:
        """Send every (room, text, slow) of ``plan`` at once; wait for all the replies."""
        ids = await asyncio.gather(*(self.send(room, text) for room, text, _ in plan))
        slow_of = {i: slow for i, (_, _, slow) in zip(ids, plan, strict=True)}
        rooms = {room for room, _, _ in plan}
        end = time.monotonic() + DEADLINE_S
        while True:
            sent: dict[str, int] = {}
            replied: dict[str, int] = {}
            for room in rooms:
                for e in await self.events(room):
                    if e["event_id"] in slow_of:
                        sent[e["event_id"]] = e["origin_server_ts"]
                    to = e["content"].get("m.relates_to", {}).get("m.in_reply_to", {})
                    if to.get("event_id") in slow_of:
                        replied[to["event_id"]] = e["origin_server_ts"]
            if len(replied) == len(ids):
                break
            if time.monotonic() > end:
                raise TimeoutError(f"{len(ids) - len(replied)} of {len(ids)} commands got no "
                                   f"reply within {DEADLINE_S:.0f} s")
            await asyncio.sleep(0.5)
        lat = {i: (replied[i] - sent[i]) / 1000 for i in ids}
        return Figures([lat[i] for i in ids if not slow_of[i]],
                       [lat[i] for i in ids if slow_of[i]])

    async def close(self) -> None:
        await self.client.close()


def plan_for(rooms: list[str], seed: int) -> list[tuple[str, str, bool]]:
    """Per room, the two model questions first (the worst place for the rest) and the eight
    other commands after them, rooms interleaved in a seeded order."""
    rng = random.Random(seed)
    per_room = [[(room, t, True) for t in SLOW] + [(room, t, False) for t in FAST]
                for room in rooms]
    out: list[tuple[str, str, bool]] = []
    while any(per_room):
        queue = rng.choice([q for q in per_room if q])
        out.append(queue.pop(0))
    return out


async def run(rooms: int = 5, llm_seconds: float = 2.0, seed: int = 11) -> bool:
    """Print the burst's figures with an instant and with a slow model; True when the goal
    (p95 of commands without the model <= :data:`GOAL_P95_S`) is met."""
    pg, hs, ollama = Postgres.start(), Synapse.start(), FakeOllama()
    family: _Family | None = None
    bot: Bot | None = None
    try:
        ollama.start(free_port())
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        bot_user, member = hs.register("memu"), hs.register("alice")
        cfg = Config(homeserver=hs.url, user_id=bot_user.user_id,
                     access_token=bot_user.access_token, device_id=bot_user.device_id,
                     database_url=pg.dsn("bench"), ollama_url=ollama.url, chat_model="fake",
                     embed_model="fake-embed", embed_dim=64, llm_timeout=60.0,
                     sync_timeout_ms=5000, pool_max=8)
        bot = Bot(cfg)
        await bot.start()
        bot.run_in_background()
        await asyncio.wait_for(bot.synced.wait(), 60)
        family = _Family(hs.url, member.user_id, member.access_token, member.device_id)
        ids = [await family.room_with(bot_user.user_id) for _ in range(rooms)]
        await family.burst([(r, f, False) for r in ids for f in (
            "/remember the boiler code is 4321", "/remember the bins go out on Thursday")])
        print(f"assistant under load: {len(SLOW) + len(FAST)} commands in each of {rooms} "
              f"rooms at once ({len(SLOW)} per room wait for the model); reply latency, s")
        print(f"{'model':>14} {'other p50':>9} {'other p95':>9} {'model p50':>9} "
              f"{'model p95':>9}")
        results = {}
        for label, delay in (("instant", 0.0), (f"{llm_seconds:g} s", llm_seconds)):
            ollama.slow(delay, embeddings=False)
            f = await family.burst(plan_for(ids, seed))
            results[label] = f
            print(f"{label:>14} {f.p(f.fast, 50):>9.2f} {f.p(f.fast, 95):>9.2f} "
                  f"{f.p(f.slow, 50):>9.2f} {f.p(f.slow, 95):>9.2f}", flush=True)
        base, loaded = results["instant"], results[f"{llm_seconds:g} s"]
        p95 = loaded.p(loaded.fast, 95)
        ratio = p95 / max(base.p(base.fast, 95), 0.001)
        print(f"commands without the model: p95 {p95:.2f} s with a {llm_seconds:g} s model, "
              f"{ratio:.2f}x the instant model's; goal <= {GOAL_P95_S:.0f} s: "
              f"{'met' if p95 <= GOAL_P95_S else 'NOT met'}")
        return p95 <= GOAL_P95_S
    finally:
        if family:
            await family.close()
        if bot:
            await bot.stop()
        ollama.stop()
        hs.stop()
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(0 if asyncio.run(run()) else 1)
