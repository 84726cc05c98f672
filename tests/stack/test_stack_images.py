"""The stack's images built here (PostgreSQL, Valkey, nginx), each started on the host's
Docker from the archive the build made: healthy by its own image health check, doing its job
from the host through a published loopback port, and keeping its data across a restart."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import psycopg
import pytest

from memu_common import container_lock as lock
from memu_dev import hoststack
from memu_dev.engine import Engine, container

pytestmark = pytest.mark.services

PASSWORD = "family-secret-for-tests"
#: The image's own health check, run every second instead of its production interval.
FAST_HEALTH = hoststack.FAST_HEALTH


def _postgres_args(image: lock.LockEntry, data: Path, secret: Path) -> list[str]:
    return [FAST_HEALTH, "-p", "127.0.0.1::5432", "-v", f"{data}:/var/lib/postgresql/data",
            "-v", f"{secret}:/run/secrets/postgres:ro",
            "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/postgres", image.ref]


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "postgres-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o644)  # read by the postgres user inside the container
    return path


def test_postgres_starts_with_pgvector_c_collation_and_keeps_data(
        engine: Engine, images: dict[str, lock.LockEntry], tmp_path: Path,
        secret: Path) -> None:
    data = tmp_path / "data"
    args = _postgres_args(images["postgres"], data, secret)
    with container(engine, "memu-test-postgres", args) as name:
        engine.wait_healthy(name, timeout=180)
        port = engine.port(name, "5432/tcp")
        dsn = f"host=127.0.0.1 port={port} user=postgres password={PASSWORD}"
        with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as conn:
            row = conn.execute("SELECT datcollate, datctype, pg_encoding_to_char(encoding) "
                               "FROM pg_database WHERE datname = 'postgres'").fetchone()
            assert row == ("C", "C", "UTF8")
            assert conn.execute("SHOW jit").fetchone() == ("off",)  # the image has no LLVM
            conn.execute("CREATE DATABASE family")
        with psycopg.connect(dsn + " dbname=family", autocommit=True) as conn:
            # Every new database has the stack's extensions (installed in template1).
            names = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
            assert {"vector", "cube", "earthdistance", "pg_trgm", "unaccent",
                    "uuid-ossp"} <= names, names
            distance = conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone()
            assert distance == (1.0,)
            conn.execute("CREATE TABLE memories (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO memories VALUES (1, 'keep me')")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"host=127.0.0.1 port={port} user=postgres password=wrong "
                            "dbname=postgres").close()
        # Data lives in the volume, not the container: a new container finds it.
        engine.docker("rm", "-f", name)
        engine.docker("run", "-d", "--name", name, *args)
        engine.wait_healthy(name, timeout=180)
        port = engine.port(name, "5432/tcp")
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres "
                             f"password={PASSWORD} dbname=family") as conn:
            assert conn.execute("SELECT note FROM memories").fetchall() == [("keep me",)]
    assert (data / "pgdata" / "PG_VERSION").read_text().strip() == "17"


def test_postgres_redoes_a_first_start_cut_short(
        engine: Engine, images: dict[str, lock.LockEntry], tmp_path: Path,
        secret: Path) -> None:
    """A power cut while the cluster was being created leaves ``pgdata.init``; the next start
    throws it away and creates the cluster again instead of running on half of one."""
    data = tmp_path / "data"
    (data / "pgdata.init").mkdir(parents=True)
    (data / "pgdata.init" / "PG_VERSION").write_text("17\n")
    with container(engine, "memu-test-postgres-cut",
                   _postgres_args(images["postgres"], data, secret)) as name:
        engine.wait_healthy(name, timeout=180)
        out = engine.docker("exec", "-u", "postgres", name, "psql", "-tAc", "SELECT 1").stdout
        assert out.strip() == "1"
    assert (data / "pgdata" / "PG_VERSION").exists()
    assert not (data / "pgdata.init").exists()


def test_postgres_without_a_password_says_what_to_set(
        engine: Engine, images: dict[str, lock.LockEntry], tmp_path: Path) -> None:
    name = "memu-test-postgres-nopw"
    engine.docker("rm", "-f", name, check=False)
    try:
        engine.docker("run", "--name", name, "-v",
                      f"{tmp_path / 'data'}:/var/lib/postgresql/data",
                      images["postgres"].ref, check=False)
        state = engine.inspect("container", name)["State"]
        logs = engine.docker("logs", name, check=False)
    finally:
        engine.docker("rm", "-f", name, check=False)
    assert state["ExitCode"] != 0
    assert "POSTGRES_PASSWORD_FILE" in logs.stderr + logs.stdout


def _resp(port: int, *command: str) -> bytes:
    """Send one command in the Redis protocol (RESP, https://redis.io/docs/latest/develop/
    reference/protocol-spec/) and return the first reply line."""
    payload = f"*{len(command)}\r\n".encode() + b"".join(
        f"${len(c.encode())}\r\n{c}\r\n".encode() for c in command)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        return s.makefile("rb").readline().rstrip(b"\r\n")


def test_valkey_answers_and_keeps_data(engine: Engine, images: dict[str, lock.LockEntry],
                                       tmp_path: Path) -> None:
    args = [FAST_HEALTH, "-p", "127.0.0.1::6379", "-v", f"{tmp_path / 'data'}:/data",
            images["valkey"].ref]
    with container(engine, "memu-test-valkey", args) as name:
        engine.wait_healthy(name, timeout=120)
        port = engine.port(name, "6379/tcp")
        assert _resp(port, "PING") == b"+PONG"
        assert _resp(port, "SET", "queue:photos", "42") == b"+OK"
        engine.docker("restart", name)
        engine.wait_healthy(name, timeout=120)
        port = engine.port(name, "6379/tcp")
        reply = _resp(port, "GET", "queue:photos")
        assert reply == b"$2"  # a two-byte bulk string follows: the value survived
        assert (tmp_path / "data" / "appendonlydir").is_dir()


def test_nginx_serves_the_stacks_server_blocks(
        engine: Engine, images: dict[str, lock.LockEntry], tmp_path: Path) -> None:
    conf = tmp_path / "memu.d"
    conf.mkdir()
    (conf / "family.conf").write_text(
        "server {\n    listen 80;\n    location = /hello { return 200 \"hello family\\n\"; }\n}\n")
    args = [FAST_HEALTH, "-p", "127.0.0.1::80", "-v", f"{conf}:/etc/nginx/memu.d:ro",
            images["nginx"].ref]
    with container(engine, "memu-test-nginx", args) as name:
        engine.wait_healthy(name, timeout=60)
        port = engine.port(name, "80/tcp")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10) as r:
            assert r.read() == b"hello family\n"
            assert "nginx/" not in r.headers.get("Server", "nginx/")  # no version shown
