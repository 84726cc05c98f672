#!/usr/bin/python3
"""A registry image's stand-in (see Dockerfile): the role in $STANDIN_ROLE.

    standin.py            serve the role's port
    standin.py --check    its health check (exit 0 when healthy)
    ollama list           (as /usr/local/bin/ollama) Ollama's CLI: the models, from the server

Roles, with what the real image answers there:
  element        :80    /config.json (the mounted /app/config.json), any other path a page
  immich-server  :2283  /api/server/ping -> {"res": "pong"} once its database is usable: the
                        role, password (DB_PASSWORD_FILE) and extensions the stack made for it;
                        its first account (the administrator), as Immich's auth API makes
                        it: GET /api/server/config (isInitialized), POST
                        /api/auth/admin-sign-up (once; then 400 "The server already has an
                        admin"), POST /api/auth/login, POST /api/auth/logout; kept in /data
  immich-ml      :3003  /ping -> pong
  ollama         :11434 / -> "Ollama is running", GET /api/tags, POST /api/pull (the real
                        streaming protocol: NDJSON status lines with total/completed bytes)
"""

import hashlib
import http.server
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROLE = os.environ.get("STANDIN_ROLE", "")
PORTS = {"element": 80, "immich-server": 2283, "immich-ml": 3003, "ollama": 11434}
HEALTH = {"element": "/config.json", "immich-server": "/api/server/ping",
          "immich-ml": "/ping", "ollama": "/api/tags"}
MODELS = Path("/root/.ollama/standin-models.json")
#: Immich's administrator (Immich keeps it in its database; the stand-in in its volume).
ADMIN = Path("/data/standin-admin.json")
#: Bytes of the stand-in model's one layer, sent in 8 chunks with a short pause each.
MODEL_SIZE = 8 << 20
db_ready = threading.Event()


def immich_database() -> None:
    """Connect as Immich would until its database and extensions are there."""
    import psycopg

    password = Path(os.environ["DB_PASSWORD_FILE"]).read_text().strip()
    while True:
        try:
            with psycopg.connect(host=os.environ["DB_HOSTNAME"], user=os.environ["DB_USERNAME"],
                                 dbname=os.environ["DB_DATABASE_NAME"], password=password,
                                 connect_timeout=3) as conn:
                have = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
                want = {"vector" if os.environ.get("DB_VECTOR_EXTENSION") == "pgvector"
                        else "vchord", "cube", "earthdistance"}
                if want <= have:
                    db_ready.set()
                    return
                print(f"immich stand-in: extensions missing: {want - have}", flush=True)
        except Exception as e:
            print(f"immich stand-in: database: {e}", flush=True)
        time.sleep(2)


def models() -> list[dict[str, Any]]:
    try:
        data = json.loads(MODELS.read_text())
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []


def immich_admin() -> dict[str, str] | None:
    try:
        data = json.loads(ADMIN.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def immich_post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Immich's auth routes: (status, JSON answer), errors in NestJS's shape."""
    def error(status: int, message: object) -> tuple[int, dict[str, Any]]:
        names = {400: "Bad Request", 401: "Unauthorized"}
        return status, {"message": message, "error": names[status], "statusCode": status}

    admin = immich_admin()
    hashed = hashlib.sha256(str(body.get("password", "")).encode()).hexdigest()
    if path == "/api/auth/admin-sign-up":
        email = str(body.get("email", ""))
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            return error(400, ["email must be an email"])
        if admin:
            return error(400, "The server already has an admin")
        ADMIN.parent.mkdir(parents=True, exist_ok=True)
        ADMIN.write_text(json.dumps({"email": email.lower(), "name": body.get("name", ""),
                                     "password": hashed}))
        return 201, {"id": "1", "email": email.lower(), "name": body.get("name", ""),
                     "isAdmin": True}
    if path == "/api/auth/login":
        if not admin or admin["email"] != str(body.get("email", "")).lower() or (
                admin["password"] != hashed):
            return error(401, "Incorrect email or password")
        return 201, {"accessToken": "standin-token", "userEmail": admin["email"],
                     "isAdmin": True}
    if path == "/api/auth/logout":
        return 200, {"successful": True, "redirectUri": "/auth/login"}
    return 404, {"message": f"Cannot POST {path}"}


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if ROLE == "element":
            if self.path == "/config.json":
                try:
                    return self.reply(200, Path("/app/config.json").read_bytes())
                except OSError:
                    return self.reply(404, b"{}")
            return self.reply(200, b"<!doctype html><title>Element (stand-in)</title>",
                              "text/html")
        if ROLE == "immich-server" and self.path == "/api/server/config":
            if not db_ready.is_set():
                return self.reply(503, b'{"message":"database not ready"}')
            return self.reply(200, json.dumps(
                {"isInitialized": immich_admin() is not None, "isOnboarded": False}).encode())
        if ROLE == "immich-server" and self.path == "/api/server/ping":
            if db_ready.is_set():
                return self.reply(200, b'{"res":"pong"}')
            return self.reply(503, b'{"message":"database not ready"}')
        if ROLE == "immich-ml" and self.path == "/ping":
            return self.reply(200, b"pong", "text/plain")
        if ROLE == "ollama" and self.path == "/":
            return self.reply(200, b"Ollama is running", "text/plain")
        if ROLE == "ollama" and self.path == "/api/tags":
            return self.reply(200, json.dumps({"models": models()}).encode())
        return self.reply(404, b'{"error":"not found"}')

    def do_POST(self) -> None:
        if ROLE == "immich-server" and self.path.startswith("/api/auth/"):
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = {}
            status, answer = immich_post(self.path, body if isinstance(body, dict) else {})
            return self.reply(status, json.dumps(answer).encode())
        if ROLE != "ollama" or self.path != "/api/pull":
            return self.reply(404, b'{"error":"not found"}')
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        name = request.get("model") or request.get("name") or ""
        if not name.startswith("standin"):
            return self.reply(500, json.dumps(
                {"error": "pull model manifest: file does not exist"}).encode())
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        digest = "sha256:" + "5" * 64

        def line(obj: dict[str, Any]) -> None:
            self.wfile.write(json.dumps(obj).encode() + b"\n")
            self.wfile.flush()

        line({"status": "pulling manifest"})
        for done in range(0, MODEL_SIZE + 1, MODEL_SIZE // 8):
            line({"status": f"pulling {digest[7:19]}", "digest": digest,
                  "total": MODEL_SIZE, "completed": done})
            time.sleep(0.1)
        line({"status": "verifying sha256 digest"})
        line({"status": "writing manifest"})
        name = name if ":" in name else f"{name}:latest"  # as Ollama lists it
        have = [m for m in models() if m["name"] != name]
        MODELS.parent.mkdir(parents=True, exist_ok=True)
        have.append({"name": name, "model": name, "size": MODEL_SIZE, "digest": digest[7:]})
        MODELS.write_text(json.dumps(have))
        line({"status": "success"})

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def get(path: str) -> bytes:
    url = f"http://127.0.0.1:{PORTS[ROLE]}{path}"
    with urllib.request.urlopen(url, timeout=3) as r:
        body: bytes = r.read()
        return body


def main() -> int:
    if Path(sys.argv[0]).name == "ollama":
        if sys.argv[1:] != ["list"]:
            print("stand-in ollama: only `ollama list`", file=sys.stderr)
            return 2
        try:
            for m in json.loads(get("/api/tags"))["models"]:
                print(m["name"])
        except OSError as e:
            print(f"Error: could not connect to ollama app: {e}", file=sys.stderr)
            return 1
        return 0
    if sys.argv[1:] == ["--check"]:
        try:
            get(HEALTH[ROLE])
        except OSError as e:
            print(e)
            return 1
        return 0
    if ROLE not in PORTS:
        print(f"stand-in: unknown role {ROLE!r}", file=sys.stderr)
        return 2
    if ROLE == "immich-server":
        threading.Thread(target=immich_database, daemon=True).start()
    # PID 1 in its container: without a handler SIGTERM is ignored and `docker stop` waits.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORTS[ROLE]), Handler)
    print(f"stand-in {ROLE} on port {PORTS[ROLE]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
