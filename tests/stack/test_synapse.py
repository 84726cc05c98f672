"""Chat's core on the host's Docker, as the stack wires it (memu_dev.hoststack): PostgreSQL
with the stack's role and database made by an init script, Synapse from the image built here,
nginx in front. Synapse answers through nginx; a user made through the shared-secret admin
API (reached on the box's inside, never through nginx) logs in through nginx."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from memu_common import container_lock as lock
from memu_dev import hoststack, matrix
from memu_dev.engine import Engine

pytestmark = pytest.mark.services


@pytest.fixture
def chat(engine: Engine, images: dict[str, lock.LockEntry],
         tmp_path: Path) -> Iterator[hoststack.Chat]:
    with hoststack.chat(engine, images, tmp_path) as running:
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
