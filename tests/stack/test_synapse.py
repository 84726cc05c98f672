"""Chat's core on the host's Docker, as the stack wires it: PostgreSQL (with the stack's role
and database made by an init script), Synapse from the image built here, and nginx in front.
Synapse answers through nginx; a user made through the shared-secret admin API (reached on
the box's inside, never through nginx) logs in through nginx."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from memu_common import container_lock as lock
from memu_dev import matrix
from memu_dev.engine import Engine, container

pytestmark = pytest.mark.services

SERVER_NAME = "family.test"
FAST_HEALTH = "--health-interval=1s"


def _synapse_config(db_password: str, shared_secret: str) -> dict[str, object]:
    """homeserver.yaml (as JSON, which is YAML) for a homeserver behind the stack's nginx,
    on the stack's PostgreSQL, never calling out to the internet."""
    return {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://{SERVER_NAME}/",
        "listeners": [{"port": 8008, "bind_addresses": ["0.0.0.0"], "type": "http",
                       "tls": False, "x_forwarded": True,
                       "resources": [{"names": ["client", "federation"], "compress": False}]}],
        "database": {"name": "psycopg2", "args": {
            "host": "postgres", "user": "synapse", "password": db_password,
            "dbname": "synapse", "cp_min": 1, "cp_max": 5}},
        "media_store_path": "/data/media",
        "signing_key_path": f"/data/{SERVER_NAME}.signing.key",
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "report_stats": False,
        "enable_registration": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
    }


NGINX_CONF = """\
server {
    listen 80;
    location ~ ^(/_matrix|/_synapse/client) {
        proxy_pass http://synapse:8008;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Host $host;
    }
}
"""


@pytest.fixture
def chat(engine: Engine, images: dict[str, lock.LockEntry], tmp_path: Path
         ) -> Iterator[tuple[str, str, str]]:
    """PostgreSQL, Synapse and nginx on one network; yields (nginx's base URL, Synapse's
    own base URL as the box's inside reaches it, the registration shared secret)."""
    db_password, shared_secret = secrets.token_hex(12), secrets.token_hex(16)
    (tmp_path / "pg-password").write_text("superuser-" + db_password)
    (tmp_path / "pg-password").chmod(0o644)
    initdb = tmp_path / "initdb.d"
    initdb.mkdir()
    (initdb / "20-synapse.sql").write_text(
        f"CREATE ROLE synapse LOGIN PASSWORD '{db_password}';\n"
        "CREATE DATABASE synapse OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0;\n")
    conf = tmp_path / "synapse"
    conf.mkdir()
    (conf / "homeserver.yaml").write_text(json.dumps(_synapse_config(db_password,
                                                                     shared_secret)))
    (conf / "homeserver.yaml").chmod(0o644)
    proxy = tmp_path / "memu.d"
    proxy.mkdir()
    (proxy / "chat.conf").write_text(NGINX_CONF)
    net = "memu-test-chat"
    engine.docker("network", "rm", net, check=False)
    engine.docker("network", "create", net)
    with ExitStack() as stack:
        stack.callback(engine.docker, "network", "rm", net, check=False)
        pg = stack.enter_context(container(engine, "memu-test-chat-postgres", [
            FAST_HEALTH, "--network", net, "--network-alias", "postgres",
            "-v", f"{tmp_path / 'pg'}:/var/lib/postgresql/data",
            "-v", f"{tmp_path / 'pg-password'}:/run/secrets/postgres:ro",
            "-v", f"{initdb}:/etc/memu/postgres/initdb.d:ro",
            "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/postgres", images["postgres"].ref]))
        engine.wait_healthy(pg, timeout=180)
        hs = stack.enter_context(container(engine, "memu-test-chat-synapse", [
            FAST_HEALTH, "--network", net, "--network-alias", "synapse",
            "-p", "127.0.0.1::8008", "-v", f"{tmp_path / 'synapse-data'}:/data",
            "-v", f"{conf}:/etc/synapse:ro",
            images["synapse"].ref]))
        proxy_name = stack.enter_context(container(engine, "memu-test-chat-nginx", [
            FAST_HEALTH, "--network", net, "-p", "127.0.0.1::80",
            "-v", f"{proxy}:/etc/nginx/memu.d:ro", images["nginx"].ref]))
        engine.wait_healthy(hs, timeout=300)
        engine.wait_healthy(proxy_name, timeout=60)
        def port(name: str, inside: str) -> str:
            return engine.docker("port", name, inside).stdout.split()[0].rsplit(":", 1)[1]

        yield (f"http://127.0.0.1:{port(proxy_name, '80/tcp')}",
               f"http://127.0.0.1:{port(hs, '8008/tcp')}", shared_secret)


def test_synapse_answers_through_nginx_and_a_registered_user_logs_in(
        chat: tuple[str, str, str]) -> None:
    base, inside, shared_secret = chat
    with urllib.request.urlopen(f"{base}/_matrix/client/versions", timeout=10) as r:
        versions = json.load(r)["versions"]
    assert "v1.11" in versions or any(v.startswith("v1.") for v in versions), versions

    # Synapse's admin API is not routed from the LAN.
    with pytest.raises(urllib.error.HTTPError) as blocked:
        matrix.register(base, shared_secret, "parent", "correct horse", admin=True)
    assert blocked.value.code == 404
    user = matrix.register(inside, shared_secret, "parent", "correct horse", admin=True)
    assert user.user_id == f"@parent:{SERVER_NAME}"
    token = matrix.login(base, "parent", "correct horse")
    req = urllib.request.Request(f"{base}/_matrix/client/v3/account/whoami",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.load(r)["user_id"] == user.user_id

    with pytest.raises(urllib.error.HTTPError) as wrong:
        matrix.login(base, "parent", "wrong horse")
    assert wrong.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as stranger:
        matrix.register(inside, "not-the-secret", "intruder", "x" * 12)
    assert stranger.value.code in (401, 403)
