"""Unit tests without services: parsing, tags, time phrases, ranking, config, invite rule."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import zoneinfo
from pathlib import Path

import pytest

from memu_common import MemuError
from memu_intelligence.__main__ import StopWatchdog, main
from memu_intelligence.bot import cancel_and_wait
from memu_intelligence.callbacks import may_serve, strip_reply_fallback
from memu_intelligence.config import Config
from memu_intelligence.errors import UserFacingError
from memu_intelligence.memory import bigrams
from memu_intelligence.ranking import cosine, fuse
from memu_intelligence.recall import history_term, keywords
from memu_intelligence.text import (
    Command,
    addressed,
    extract_tags,
    is_acknowledgement,
    is_question,
    parse_command,
    parse_short_id,
    strip_mention,
)
from memu_intelligence.timefmt import format_time

LONDON = zoneinfo.ZoneInfo("Europe/London")
NOW = dt.datetime(2025, 6, 2, 14, 0, tzinfo=LONDON)  # a Monday afternoon (BST)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/remember the wifi is hunter2", Command("remember", "the wifi is hunter2")),
        ("  /RECALL  where?  ", Command("recall", "where?")),
        ("/help", Command("help", "")),
        ("/list add shopping\nmilk", Command("list", "add shopping\nmilk")),
        ("hello /remember", None),
        ("/ nothing", None),
        ("//double", None),
        ("", None),
    ],
)
def test_parse_command(body: str, expected: Command | None) -> None:
    assert parse_command(body) == expected


def test_extract_tags() -> None:
    assert extract_tags("wifi #Home is #home-net and #home, not a#b or ##x") == [
        "home", "home-net"]
    assert extract_tags("no tags here") == []
    assert extract_tags("#café #日本") == ["café", "日本"]


def test_parse_short_id() -> None:
    assert parse_short_id("m12", "m") == 12
    assert parse_short_id(" 7 ", "m") == 7
    assert parse_short_id("R3", "r") == 3
    for bad in ("banana", "m", "r3x", "m-1", "9" * 30):
        with pytest.raises(UserFacingError):
            parse_short_id(bad, "m")


def test_strip_mention() -> None:
    uid = "@memu:family.example"
    assert strip_mention("memu: where is the key?", uid, None) == "where is the key?"
    assert strip_mention("@memu:family.example what's for tea", uid, None) == "what's for tea"
    assert strip_mention("Hey Memu Bot, bins?", uid, "Memu Bot") == "Hey  bins?"
    assert strip_mention("memurial day", uid, None) is None
    assert strip_mention("nothing here", uid, None) is None


@pytest.mark.parametrize(
    ("body", "question"),
    [
        ("memu: where is the key?", "where is the key?"),
        ("Memu, bins?", "bins?"),
        ("  @memu:family.example: what's for tea", "what's for tea"),
        ("Memu Bot: the wifi", "the wifi"),
        ("see memu.local/admin for the updates", None),
        ("mail ada@memu.family about it", None),
        ("I love my memu box", None),
        ("memu is great", None),
        ("https://memu.local/photos", None),
    ],
)
def test_only_a_message_that_starts_with_the_name_addresses_the_bot(
        body: str, question: str | None) -> None:
    assert addressed(body, "@memu:family.example", "Memu Bot") == question


@pytest.mark.parametrize(
    ("text", "question", "thanks"),
    [
        ("thanks!", False, True), ("Thank you so much", False, True), ("ok", False, True),
        ("👍", False, True), ("cheers memu", False, True),
        ("where is the key?", True, False), ("what about the bins", True, False),
        ("thanks, where is the key?", True, False), ("the wifi password", False, False),
        ("ok so what's the wifi password then", True, False),
    ],
)
def test_questions_and_thanks(text: str, question: bool, thanks: bool) -> None:
    assert (is_question(text), is_acknowledgement(text)) == (question, thanks)


def test_bigrams_of_unspaced_scripts() -> None:
    assert bigrams("密码是什么\uff1f") == ["密码", "码是", "是什", "什么"]
    assert bigrams("wifi 密 code") == ["密"]
    assert bigrams("the wifi password") == []
    assert len(bigrams("密" * 3 + "码" * 40)) <= 16


def test_strip_reply_fallback() -> None:
    assert strip_reply_fallback("> <@a:x> hi\n> there\n\n/recall key") == "/recall key"
    assert strip_reply_fallback("/recall key") == "/recall key"


def test_invites_only_from_our_homeserver() -> None:
    assert may_serve("@alice:family.example", "family.example")
    assert may_serve("@alice:family.example:8448", "family.example:8448")
    assert not may_serve("@eve:evil.example", "family.example")
    assert not may_serve("@eve:family.example.evil", "family.example")
    assert not may_serve("@eve:evil.example:family.example", "family.example")
    assert not may_serve("alice", "family.example")
    assert not may_serve("", "family.example")


def test_format_time() -> None:
    assert format_time(NOW + dt.timedelta(hours=2), LONDON, NOW) == "today 16:00"
    assert format_time(NOW + dt.timedelta(days=1), LONDON, NOW) == "tomorrow 14:00"
    assert format_time(NOW + dt.timedelta(seconds=20), LONDON, NOW) == "today 14:00:20"
    assert format_time(NOW + dt.timedelta(days=4), LONDON, NOW) == "Fri 6 Jun 2025 14:00"


def test_fuse_rewards_agreement() -> None:
    ranked = fuse([1, 2, 3], [3, 4])
    assert [k for k, _ in ranked][:1] == [3]
    assert {k for k, _ in ranked} == {1, 2, 3, 4}
    assert fuse([], []) == []
    assert [k for k, _ in fuse([5, 6])] == [5, 6]  # one list keeps its order


def test_cosine() -> None:
    assert cosine([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine([0, 0], [1, 1]) == 0.0
    with pytest.raises(ValueError):
        cosine([1], [1, 2])


def test_keywords_and_history_term() -> None:
    assert keywords("Where is the WiFi password?") == ["wifi", "password"]
    assert history_term("what is the spare key") == "spare or key"
    assert history_term("where is it?") is None


def _env(**extra: str) -> dict[str, str]:
    return {"MEMU_BOT_HOMESERVER": "http://synapse:8008/", "MEMU_BOT_USER_ID": "@memu:fam.example",
            "MEMU_BOT_ACCESS_TOKEN": "tok", "MEMU_BOT_DATABASE_URL": "dbname=memu", **extra}


def test_config_from_env(tmp_path: Path) -> None:
    cfg = Config.from_env(_env(MEMU_BOT_TIMEZONE="Europe/London", MEMU_BOT_EMBED_DIM="384"))
    assert cfg.homeserver == "http://synapse:8008" and cfg.server_name == "fam.example"
    assert cfg.embed_dim == 384 and cfg.tz == LONDON
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    env = _env(MEMU_BOT_ACCESS_TOKEN_FILE=str(secret))
    del env["MEMU_BOT_ACCESS_TOKEN"]
    assert Config.from_env(env).access_token == "from-file"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MEMU_BOT_ACCESS_TOKEN": ""}, "MEMU_BOT_ACCESS_TOKEN is not set"),
        ({"MEMU_BOT_TIMEZONE": "Mars/Olympus"}, "MEMU_BOT_TIMEZONE"),
        ({"MEMU_BOT_LLM_TIMEOUT": "-1"}, "MEMU_BOT_LLM_TIMEOUT"),
        ({"MEMU_BOT_USER_ID": "memu"}, "not a Matrix user id"),
        ({"MEMU_BOT_ACCESS_TOKEN": "", "MEMU_BOT_ACCESS_TOKEN_FILE": "/nonexistent"},
         "cannot read"),
    ],
)
def test_config_errors(change: dict[str, str], message: str) -> None:
    with pytest.raises(MemuError, match=message):
        Config.from_env(_env(**change))


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("memu-intelligence ")


def test_missing_config_exits_2(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    for var in _env():
        monkeypatch.delenv(var, raising=False)
    assert main(["--healthcheck"]) == 2
    assert "hint:" in capsys.readouterr().err


async def test_a_stop_that_hangs_ends_in_a_stack_dump_and_exit_status_1(tmp_path: Path) -> None:
    async def stuck() -> None:  # a task that never lets the stop end
        await asyncio.Event().wait()

    task = asyncio.create_task(stuck(), name="memu-stuck")
    await asyncio.sleep(0)
    codes: list[int] = []
    exited = threading.Event()
    with (tmp_path / "stderr").open("w+") as out:
        dog = StopWatchdog(0.05, exit=lambda code: (codes.append(code), exited.set()), out=out)
        dog.arm()
        dog.arm()  # a second signal does not start a second countdown
        assert await asyncio.to_thread(exited.wait, 10)
        out.seek(0)
        dump = out.read()
    task.cancel()
    assert codes == [1]
    assert "most recent call first" in dump  # every thread's stack (faulthandler)
    assert "memu-stuck" in dump and "in stuck" in dump  # and the task that held it up


def test_a_stop_in_time_does_not_exit() -> None:
    codes: list[int] = []
    dog = StopWatchdog(0.05, exit=codes.append)
    dog.arm()
    dog.disarm()
    time.sleep(0.3)
    assert codes == []


async def test_a_swallowed_cancellation_is_repeated_until_the_task_ends() -> None:
    swallowed = 0

    async def deaf() -> None:  # eats the first two cancellations, as a racing timeout may
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every=0.01), timeout=10)
    assert task.cancelled() and swallowed == 3
