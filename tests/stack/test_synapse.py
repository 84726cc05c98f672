"""Chat's core on the host's Docker, started as the box starts it (memu_dev.hoststack: the
stack's compose.yaml, memu_firstboot.stack_config, memu_agent.preload and memu_agent.stack):
PostgreSQL with the stack's role and database made by an init script, Synapse from the image
built here, nginx in front. Synapse answers through nginx; a user made through the
shared-secret admin API (reached on the box's inside, never through nginx) logs in through
nginx."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from memu_agent import stack
from memu_common import container_lock as lock
from memu_dev import hoststack, matrix
from memu_dev.engine import Engine

pytestmark = pytest.mark.services


@pytest.fixture
def chat(engine: Engine, images: dict[str, lock.LockEntry],
         tmp_path: Path) -> Iterator[hoststack.Chat]:
    with hoststack.chat(engine, tmp_path) as running:
        yield running


def test_synapse_answers_through_nginx_and_a_registered_user_logs_in(
        chat: hoststack.Chat) -> None:
    with urllib.request.urlopen(f"{chat.base}/_matrix/client/versions", timeout=10) as r:
        versions = json.load(r)["versions"]
    assert any(v.startswith("v1.") for v in versions), versions

    # Synapse's admin API is not routed from the LAN.
    with pytest.raises(urllib.error.HTTPError) as blocked:
        matrix.register(chat.base, chat.shared_secret, "parent", "correct horse", admin=True)
    assert blocked.value.code == 404
    user = matrix.register(chat.inside, chat.shared_secret, "parent", "correct horse",
                           admin=True)
    assert user.user_id == f"@parent:{hoststack.SERVER_NAME}"
    token = matrix.login(chat.base, "parent", "correct horse")
    req = urllib.request.Request(f"{chat.base}/_matrix/client/v3/account/whoami",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.load(r)["user_id"] == user.user_id

    with pytest.raises(urllib.error.HTTPError) as wrong:
        matrix.login(chat.base, "parent", "wrong horse")
    assert wrong.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as stranger:
        matrix.register(chat.inside, "not-the-secret", "intruder", "x" * 12)
    assert stranger.value.code in (401, 403)


def test_stack_health_is_read_from_docker_and_a_crash_loop_is_named(
        engine: Engine, chat: hoststack.Chat, tmp_path: Path) -> None:
    """What /api/status shows (memu_agent.stack.services, Docker's API): every service
    healthy; then Synapse, given a broken configuration, crash-loops and is reported by name
    while the others stay healthy."""
    socket = Path(engine.host.removeprefix("unix://"))
    project = chat.containers[0].rsplit("-", 2)[0]
    got = asyncio.run(stack.services(socket, project))
    assert {k: v["health"] for k, v in got.items()} == dict.fromkeys(
        ("postgres", "proxy", "synapse", "valkey"), "healthy")

    (tmp_path / "config" / "synapse" / "homeserver.yaml").write_text("server_name: [broken\n")
    engine.docker("restart", f"{project}-synapse-1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = asyncio.run(stack.services(socket, project))
        if got["synapse"]["state"] in ("restarting", "exited"):
            break
        time.sleep(0.5)
    assert got["synapse"]["state"] in ("restarting", "exited"), got["synapse"]
    assert got["postgres"]["health"] == "healthy" and got["proxy"]["health"] == "healthy"
