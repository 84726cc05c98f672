"""Chat's core (PostgreSQL, Synapse, nginx) wired as the stack will be, on a Docker engine on
the build host: used by tests/stack and `just bench-stack`.

One Docker network; PostgreSQL makes Synapse's role and database (UTF8, C collation) from an
init script; Synapse reads a homeserver.yaml for a box behind nginx that never calls out to
the internet; nginx routes ``/_matrix`` and ``/_synapse/client`` to Synapse and nothing else
(Synapse's admin API is not reachable from the LAN). Synapse's own port is also published
on loopback, standing for the box's inside (where the agent creates users).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from memu_common import container_lock as lock
from memu_dev.engine import Engine, container

SERVER_NAME = "family.test"
#: The images' own health checks, run every second (Docker 20.10 has no start interval).
FAST_HEALTH = "--health-interval=1s"

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


@dataclass(frozen=True)
class Chat:
    """A running chat core: ``base`` is nginx's URL (the LAN's view), ``inside`` Synapse's
    own URL, ``shared_secret`` Synapse's registration secret, ``containers`` their names."""

    base: str
    inside: str
    shared_secret: str
    containers: tuple[str, ...]


def synapse_config(db_password: str, shared_secret: str) -> dict[str, object]:
    """homeserver.yaml (as JSON, which is YAML) for the chat core."""
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


@contextlib.contextmanager
def chat(engine: Engine, images: Mapping[str, lock.LockEntry], workdir: Path,
         prefix: str = "memu-test-chat") -> Iterator[Chat]:
    """Start the chat core with its state under ``workdir``; wait until every container is
    healthy; remove the containers and the network afterwards.

    Raises:
        MemuError: a container did not become healthy (the message has its log tail).
    """
    db_password, shared_secret = secrets.token_hex(12), secrets.token_hex(16)
    (workdir / "pg-password").write_text("superuser-" + db_password)
    (workdir / "pg-password").chmod(0o644)  # read by the postgres user in the container
    initdb = workdir / "initdb.d"
    initdb.mkdir()
    (initdb / "20-synapse.sql").write_text(
        f"CREATE ROLE synapse LOGIN PASSWORD '{db_password}';\n"
        "CREATE DATABASE synapse OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0;\n")
    conf = workdir / "synapse"
    conf.mkdir()
    (conf / "homeserver.yaml").write_text(json.dumps(synapse_config(db_password,
                                                                    shared_secret)))
    (conf / "homeserver.yaml").chmod(0o644)
    proxy = workdir / "memu.d"
    proxy.mkdir()
    (proxy / "chat.conf").write_text(NGINX_CONF)
    net = prefix
    engine.docker("network", "rm", net, check=False)
    engine.docker("network", "create", net)
    with contextlib.ExitStack() as stack:
        stack.callback(engine.docker, "network", "rm", net, check=False)
        pg = stack.enter_context(container(engine, f"{prefix}-postgres", [
            FAST_HEALTH, "--network", net, "--network-alias", "postgres",
            "-v", f"{workdir / 'pg'}:/var/lib/postgresql/data",
            "-v", f"{workdir / 'pg-password'}:/run/secrets/postgres:ro",
            "-v", f"{initdb}:/etc/memu/postgres/initdb.d:ro",
            "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/postgres", images["postgres"].ref]))
        engine.wait_healthy(pg, timeout=180)
        hs = stack.enter_context(container(engine, f"{prefix}-synapse", [
            FAST_HEALTH, "--network", net, "--network-alias", "synapse",
            "-p", "127.0.0.1::8008", "-v", f"{workdir / 'synapse-data'}:/data",
            "-v", f"{conf}:/etc/synapse:ro", images["synapse"].ref]))
        nginx = stack.enter_context(container(engine, f"{prefix}-nginx", [
            FAST_HEALTH, "--network", net, "-p", "127.0.0.1::80",
            "-v", f"{proxy}:/etc/nginx/memu.d:ro", images["nginx"].ref]))
        engine.wait_healthy(hs, timeout=300)
        engine.wait_healthy(nginx, timeout=60)
        yield Chat(base=f"http://127.0.0.1:{engine.port(nginx, '80/tcp')}",
                   inside=f"http://127.0.0.1:{engine.port(hs, '8008/tcp')}",
                   shared_secret=shared_secret, containers=(pg, hs, nginx))
