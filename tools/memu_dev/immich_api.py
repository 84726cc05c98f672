"""An in-process stand-in for Immich's first-account API, for the unit tests: the Immich
image is a registry image that cannot be fetched here. It answers the routes
:mod:`memu_firstboot.photos` uses as Immich does (immich-app/immich
server/src/controllers/auth.controller.ts and server.controller.ts):

    GET  /api/server/config        {"isInitialized": bool, ...}
    POST /api/auth/admin-sign-up   201 once; then 400 "The server already has an admin";
                                   an email without "@" 400 with class-validator's list
    POST /api/auth/login           201 {"accessToken": ...} for the admin's email and
                                   password, 401 otherwise
    POST /api/auth/logout          200

The stack's container stand-in (memu_dev/standin) answers the same routes behind nginx.
"""

from __future__ import annotations

from aiohttp import web

ALREADY = "The server already has an admin"


class Immich:
    """Immich's first-account routes; ``starting`` answers 502 that many times first (nginx
    or docker-proxy while Immich migrates), ``race`` says isInitialized false once more
    after the admin exists (another sign-up came between the look and the sign-up)."""

    def __init__(self, starting: int = 0, race: bool = False) -> None:
        self.admin: dict[str, str] | None = None
        self.starting = starting
        self.race = race
        self.logouts = 0
        self.sign_ups = 0

    async def config(self, request: web.Request) -> web.Response:
        if self.starting > 0:
            self.starting -= 1
            return web.Response(status=502, text="Bad Gateway")
        initialized = self.admin is not None and not self.race
        self.race = False
        return web.json_response({"isInitialized": initialized, "isOnboarded": False})

    async def sign_up(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.sign_ups += 1
        if "@" not in body.get("email", ""):
            return web.json_response({"message": ["email must be an email"],
                                      "error": "Bad Request", "statusCode": 400}, status=400)
        if self.admin:
            return web.json_response({"message": ALREADY, "error": "Bad Request",
                                      "statusCode": 400}, status=400)
        self.admin = {"email": body["email"], "password": body["password"],
                      "name": body["name"]}
        return web.json_response({"id": "u1", "email": body["email"], "isAdmin": True},
                                 status=201)

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.admin and (body["email"], body["password"]) == (
                self.admin["email"], self.admin["password"]):
            return web.json_response({"accessToken": "tok", "isAdmin": True}, status=201)
        return web.json_response({"message": "Incorrect email or password",
                                  "statusCode": 401}, status=401)

    async def logout(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer tok":
            return web.json_response({"message": "Invalid user token"}, status=401)
        self.logouts += 1
        return web.json_response({"successful": True})

    def app(self) -> web.Application:
        """The routes above, on a new aiohttp application."""
        app = web.Application()
        app.router.add_get("/api/server/config", self.config)
        app.router.add_post("/api/auth/admin-sign-up", self.sign_up)
        app.router.add_post("/api/auth/login", self.login)
        app.router.add_post("/api/auth/logout", self.logout)
        return app
