"""Throwaway PostgreSQL and Synapse for the bot's tests (started by conftest fixtures) and
the recall benchmark's concurrency run.

Both listen on loopback on free ports, live in temporary directories, and are stopped at
the end of the session. Every wait has a deadline; on failure the service's log is printed.
Installed by ``tools/setup-services.sh``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from memu_common import MemuError
from memu_dev import matrix
from memu_dev.paths import REPO

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SYNAPSE_PY = REPO / ".tools" / "synapse-venv" / "bin" / "python"
SETUP_HINT = "run tools/setup-services.sh (as root) to install PostgreSQL 15, pgvector and Synapse"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fail_with_log(what: str, log: Path) -> NoReturn:
    text = log.read_text(errors="replace")[-6000:] if log.exists() else "(no log)"
    print(f"--- {log} ---\n{text}", file=sys.stderr)
    raise MemuError(f"{what}; log above ({log})", hint=SETUP_HINT)


@dataclass
class Postgres:
    """A running cluster; ``dsn(db)`` connects as the superuser ``memu`` over TCP."""

    root: Path
    port: int
    user: str | None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=memu dbname={dbname}"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _run(self, *argv: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], user=self.user, capture_output=True,
                              text=True, timeout=60, check=False)

    @classmethod
    def start(cls) -> Postgres:
        if not (PG_BIN / "initdb").exists():
            raise MemuError(f"PostgreSQL 15 not found in {PG_BIN}", hint=SETUP_HINT)
        # PostgreSQL refuses to run as root: use the postgres (or nobody) account then.
        user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                user = name
                break
        root = Path(tempfile.mkdtemp(prefix="memu-pg-"))
        root.chmod(0o755)
        if user:
            shutil.chown(root, user)
        pg = cls(root, free_port(), user)
        r = pg._run(PG_BIN / "initdb", "-D", root / "data", "-U", "memu", "--auth=trust",
                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        if r.returncode:
            raise MemuError(f"initdb failed: {r.stderr[-2000:]}", hint=SETUP_HINT)
        opts = (f"-k {root} -p {pg.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        r = pg._run(PG_BIN / "pg_ctl", "-D", root / "data", "-l", pg.log, "-o", opts,
                    "-w", "-t", "30", "start")
        if r.returncode:
            _fail_with_log(f"PostgreSQL did not start: {r.stderr.strip()}", pg.log)
        return pg

    def stop(self) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.root / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class MatrixUser:
    user_id: str
    access_token: str
    device_id: str


class Synapse:
    """A running homeserver with server name ``memu.test``."""

    server_name = "memu.test"

    def __init__(self, root: Path, port: int, secret: str, proc: subprocess.Popen[bytes]):
        self.root, self.port, self.secret, self.proc = root, port, secret, proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "synapse.log"

    @classmethod
    def start(cls) -> Synapse:
        if not SYNAPSE_PY.exists():
            raise MemuError(f"Synapse not found at {SYNAPSE_PY}", hint=SETUP_HINT)
        root = Path(tempfile.mkdtemp(prefix="memu-synapse-"))
        port, secret = free_port(), os.urandom(16).hex()
        limit = {"per_second": 10000, "burst_count": 10000}
        config = {
            "server_name": cls.server_name,
            "pid_file": str(root / "homeserver.pid"),
            "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http",
                           "tls": False, "x_forwarded": False,
                           "resources": [{"names": ["client"], "compress": False}]}],
            "database": {"name": "sqlite3", "args": {"database": str(root / "homeserver.db")}},
            "media_store_path": str(root / "media"),
            "signing_key_path": str(root / "signing.key"),
            "registration_shared_secret": secret,
            "macaroon_secret_key": os.urandom(16).hex(),
            "form_secret": os.urandom(16).hex(),
            "report_stats": False,
            "enable_metrics": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "presence": {"enabled": False},
            "rc_message": limit, "rc_registration": limit, "rc_room_creation": limit,
            "rc_login": {"address": limit, "account": limit, "failed_attempts": limit},
            "rc_joins": {"local": limit, "remote": limit},
            "rc_joins_per_room": limit,
            "rc_invites": {"per_room": limit, "per_user": limit, "per_issuer": limit},
            "rc_3pid_validation": limit,
            "rc_presence": {"per_user": limit},
            "rc_delayed_event_mgmt": limit,
        }
        cfg = root / "homeserver.yaml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        log = root / "synapse.log"
        py = str(SYNAPSE_PY)
        r = subprocess.run([py, "-m", "synapse.app.homeserver", "-c", str(cfg),
                            "--generate-keys"], capture_output=True, text=True, timeout=120,
                           check=False)
        if r.returncode:
            raise MemuError(
                f"synapse --generate-keys failed: {r.stderr[-2000:]}", hint=SETUP_HINT)
        with log.open("wb") as out:
            proc = subprocess.Popen([py, "-m", "synapse.app.homeserver", "-c", str(cfg)],
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        hs = cls(root, port, secret, proc)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _fail_with_log(f"Synapse exited with {proc.returncode}", log)
            try:
                with urllib.request.urlopen(f"{hs.url}/_matrix/client/versions", timeout=2):
                    return hs
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        hs.stop()
        _fail_with_log("Synapse did not answer /_matrix/client/versions within 90 s", log)
        raise AssertionError  # unreachable

    def register(self, localpart: str, *, admin: bool = False) -> MatrixUser:
        """Create a user through the shared-secret admin API (memu_dev.matrix)."""
        user = matrix.register(self.url, self.secret, localpart, os.urandom(8).hex(),
                               admin=admin, timeout=10)
        return MatrixUser(user.user_id, user.access_token, user.device_id)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)
