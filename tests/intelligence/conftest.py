"""Fixtures for the bot's tests: real PostgreSQL and Synapse (session), fake Ollama, the bot.

Services are started once per session by ``services.py`` and fail (not skip) with a pointer
to ``tools/setup-services.sh`` when not installed. Each test gets a fresh database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from bot_matrix import BotRunner, TestUser
from psycopg_pool import AsyncConnectionPool

from memu_dev.fake_ollama import FakeOllama
from memu_dev.services import MatrixUser, Postgres, Synapse, free_port
from memu_intelligence.config import Config
from memu_intelligence.migrations import migrate

EMBED_DIM = 64


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def synapse() -> Iterator[Synapse]:
    hs = Synapse.start()
    yield hs
    hs.stop()


@pytest.fixture(scope="session")
def fake_ollama_server() -> Iterator[FakeOllama]:
    fake = FakeOllama(dim=EMBED_DIM)
    fake.start(free_port())
    yield fake
    fake.stop()


@pytest.fixture
def fake_ollama(fake_ollama_server: FakeOllama) -> Iterator[FakeOllama]:
    fake_ollama_server.up()
    fake_ollama_server.requests.clear()
    yield fake_ollama_server
    fake_ollama_server.up()


@pytest.fixture
def database_url(postgres: Postgres) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres.dsn(name)
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False,
                            kwargs={"autocommit": True})
    await p.open(wait=True, timeout=10)
    await migrate(p)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def bot_user(synapse: Synapse) -> MatrixUser:
    return synapse.register("memu")


@pytest.fixture(scope="session")
def alice_account(synapse: Synapse) -> MatrixUser:
    return synapse.register("alice")


@pytest.fixture
def bot_config(
    database_url: str, synapse: Synapse, bot_user: MatrixUser, fake_ollama: FakeOllama,
    tmp_path: Path,
) -> Config:
    return Config(
        homeserver=synapse.url,
        user_id=bot_user.user_id,
        access_token=bot_user.access_token,
        device_id=bot_user.device_id,
        database_url=database_url,
        ollama_url=fake_ollama.url,
        chat_model="fake",
        embed_model="fake-embed",
        embed_dim=EMBED_DIM,
        timezone="Europe/London",
        language="en-GB",
        llm_timeout=2.0,
        embed_timeout=1.0,
        search_timeout=5.0,
        max_message_chars=2000,
        sync_timeout_ms=5000,
        reminder_poll=1.0,
        heartbeat_file=str(tmp_path / "alive"),
    )


@pytest.fixture
async def bot(bot_config: Config) -> AsyncIterator[BotRunner]:
    runner = BotRunner(bot_config)
    await runner.start()
    yield runner
    await runner.stop()


@pytest.fixture
async def alice(synapse: Synapse, alice_account: MatrixUser) -> AsyncIterator[TestUser]:
    user = TestUser(synapse.url, alice_account)
    yield user
    await user.close()
