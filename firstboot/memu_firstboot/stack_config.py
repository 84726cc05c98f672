"""The family stack's configuration, rendered from the family's settings: what the Compose
project in ``/usr/share/memu/stack/compose.yaml`` mounts from ``/etc/memu/stack/``.

    python3 -m memu_firstboot.stack_config --server-name family.example [--config DIR]

writes (idempotently: secrets made once and kept, every file written atomically)::

    secrets/postgres-superuser   PostgreSQL superuser password (POSTGRES_PASSWORD_FILE)
    secrets/*                    the other generated secrets, one per file
    secrets/tailscale-authkey    the family's Tailscale auth key, when they gave one
    postgres/initdb.d/20-synapse.sql   Synapse's role and database (UTF8, C collation)
    postgres/initdb.d/30-immich.sql    Immich's role and database, with the extensions it
                                 needs made by the superuser (pgvector, cube, earthdistance)
    synapse/homeserver.yaml      Synapse's configuration (JSON, which is YAML 1.2)
    postgres/initdb.d/40-intelligence.sql   the assistant's role and database (pgvector)
    element/config.json          the chat web client's configuration: this box's homeserver
    intelligence/bot.env         the assistant's settings: where Synapse, its database and
                                 Ollama are, the family's time zone (0600: the database
                                 password; Compose reads it as root)
    stack.env                    what the project needs besides images (the server name,
                                 the optional services switched on or off)

On the box the files are written by the pyinfra deploy (:mod:`memu_firstboot.deploy`), which
renders them with :func:`render` from the settings the first-boot apply saved; :func:`apply`
writes the same files in this process by the same rule (the command line, for tests and for
an operator with a shell). The apply calls :func:`write_bot_account` once it has made the
assistant's Matrix account (its presence is what lets the assistant start).
``/etc/memu/stack/stack.env``
existing is what "the stack is configured" means to ``memu-stack.service``.

Synapse options: https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html
Element web options: https://github.com/element-hq/element-web/blob/develop/docs/config.md
Immich's database: https://immich.app/docs/install/environment-variables (DB_VECTOR_EXTENSION)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from memu_common import MemuError
from memu_common import optional as optional_services
from memu_common.files import write_atomic
from memu_firstboot import form
from memu_firstboot.config_files import Applied, write_all

CONFIG_DIR = Path("/etc/memu/stack")
#: DNS name rules (RFC 1123 labels); Synapse's server_name may also carry a port.
_SERVER_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
    r"(:[0-9]{1,5})?$")
SECRET_NAMES = ("postgres-superuser", "synapse-db", "synapse-registration",
                "synapse-macaroon", "synapse-form", "immich-db", "intelligence-db")
#: Where the family's Tailscale auth key is kept (compose.yaml mounts it for Tailscale).
TAILSCALE_KEY = "secrets/tailscale-authkey"
#: Synapse's registration shared secret (the admin password recovery reads it too).
REGISTRATION_SECRET = "secrets/synapse-registration"
#: The assistant's Matrix password, made at setup (the box signs it back in with it).
BOT_SECRET = "memu-bot-password"
BOT_PASSWORD = f"secrets/{BOT_SECRET}"
#: The assistant's Matrix account (user ID, access token, device), written at setup.
BOT_ACCOUNT = "intelligence/account.env"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the family chose that the stack's configuration depends on.

    Attributes:
        server_name: the Matrix server name (the part after ``:`` in ``@mum:family.example``);
            lower-case DNS name, optionally with ``:port``. It cannot change later (it is in
            every user and room ID).
        optional: the optional services switched "on" or "off" (the others are "auto":
            by the box's RAM, remote access off; :mod:`memu_common.optional`).
        tailscale_auth_key: the family's Tailscale auth key (``tskey-…``), or "" for no
            remote access; given, it switches Tailscale on unless ``optional`` says "off".
        timezone: the family's IANA time zone (the assistant's dates and times, photos).
        language: the family's language tag from the setup form (``en-GB``): the chat
            client's language until a person picks another.
    """

    server_name: str
    optional: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tailscale_auth_key: str = dataclasses.field(default="", repr=False)
    timezone: str = "UTC"
    language: str = "en"

    def __post_init__(self) -> None:
        optional_services.check(self.optional)
        key = self.tailscale_auth_key
        try:  # the setup form's own check (which trims what a person pasted), so they agree
            good = form.tailscale_auth_key(key) == key
            hint = "copy the key alone, from tskey- to its end, without spaces or line breaks"
        except ValueError as e:
            good, hint = False, str(e)
        if not good:
            raise MemuError("the Tailscale auth key does not look like one", hint=hint)
        try:
            form.timezone(self.timezone)
        except ValueError as e:
            raise MemuError(f"{self.timezone!r} is not a time zone",
                            hint="use a name like Europe/London or America/New_York") from e
        try:
            good = form.language(self.language) == self.language
        except ValueError:
            good = False
        if not good:
            raise MemuError(f"{self.language!r} is not a language tag",
                            hint="use a tag like en, en-GB or de-DE")
        if not _SERVER_NAME.match(self.server_name):
            raise MemuError(f"server name {self.server_name!r} is not a host name",
                            hint="use lower-case letters, digits, dots and dashes, e.g. "
                                 "smith.home")


def synapse_config(settings: Settings, secret: dict[str, str]) -> dict[str, object]:
    """homeserver.yaml's content: a box behind the stack's nginx that never calls out to the
    internet (no key servers, no stats), with its state under the container's ``/data``."""
    name = settings.server_name
    return {
        "server_name": name,
        "public_baseurl": f"http://{name}/",
        "listeners": [{"port": 8008, "bind_addresses": ["0.0.0.0"], "type": "http",
                       "tls": False, "x_forwarded": True,
                       "resources": [{"names": ["client", "federation"], "compress": False}]}],
        "database": {"name": "psycopg2", "args": {
            "host": "postgres", "user": "synapse", "password": secret["synapse-db"],
            "dbname": "synapse", "cp_min": 1, "cp_max": 5}},
        "media_store_path": "/data/media",
        # memu/synapse's entrypoint (synapse-start) generates it only when missing, here.
        "signing_key_path": "/data/signing.key",
        "registration_shared_secret": secret["synapse-registration"],
        "macaroon_secret_key": secret["synapse-macaroon"],
        "form_secret": secret["synapse-form"],
        "report_stats": False,
        "enable_registration": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        # /.well-known/matrix/server (and, from public_baseurl, .../client), so phone apps
        # find the homeserver from the server name alone.
        "serve_server_wellknown": True,
        # New rooms unencrypted by default in Element (its "io.element.e2ee" well-known key,
        # element-web docs/e2ee.md): the family room and the rooms the family makes with the
        # assistant are read by the assistant on this box (it has no end-to-end encryption
        # support), and no message leaves the box. A family can still turn encryption on for
        # a room of their own; the assistant then cannot read it.
        "extra_well_known_client_content": {"io.element.e2ee": {"default": False}},
    }


def element_config(settings: Settings) -> dict[str, object]:
    """Element web's config.json: this box's homeserver only, no guests, no sign-up (the
    admin invites the family), nothing that calls out to element.io's services, in the
    family's language (Element's ``language`` setting takes a config-level default:
    element-web src/settings/Settings.tsx; a person's own choice in Element still wins)."""
    name = settings.server_name
    return {
        "default_server_config": {"m.homeserver": {"base_url": f"http://{name}",
                                                   "server_name": name}},
        "disable_custom_urls": True,
        "disable_guests": True,
        "disable_3pid_login": True,
        "brand": "Memu",
        "room_directory": {"servers": [name]},
        "integrations_ui_url": "",
        "integrations_rest_url": "",
        "integrations_widgets_urls": [],
        "setting_defaults": {"UIFeature.registration": False,
                             "UIFeature.passwordReset": False,
                             "language": settings.language},
        "show_labs_settings": False,
    }


#: Tailscale's serve config, which the stack's tailscale container reads (TS_SERVE_CONFIG).
TAILSCALE_SERVE = "tailscale/serve.json"
#: Where Tailscale's HTTPS goes: the agent's front door (port 80), on loopback because the
#: tailscale container shares the host's network.
FRONT_DOOR = "http://127.0.0.1:80"


def tailscale_serve_config() -> dict[str, object]:
    """Tailscale's serve config (``ipn.ServeConfig`` as JSON, tailscale.com/ipn/serve.go):
    HTTPS on the tailnet's port 443 with the box's Tailscale certificate, proxied to the
    agent's front door, so the family's devices reach chat, photos' links and ``/admin`` at
    ``https://<box>.<tailnet>.ts.net`` (phone chat apps need HTTPS). Never opened to the
    internet (``AllowFunnel`` false). The container's entry point puts the box's certificate
    name for ``${TS_CERT_DOMAIN}``; Tailscale sends the name asked for as ``Host`` and adds
    ``X-Forwarded-Proto: https``, which the agent trusts from loopback only."""
    site = "${TS_CERT_DOMAIN}:443"
    return {"TCP": {"443": {"HTTPS": True}},
            "Web": {site: {"Handlers": {"/": {"Proxy": FRONT_DOOR}}}},
            "AllowFunnel": {site: False}}


def service_database_sql(role: str, password: str, extensions: Sequence[str]) -> str:
    """A service's role and its own database (UTF8, owned by it), with the extensions it
    needs made there by the superuser (the service's role cannot make them)."""
    return (f"CREATE ROLE {role} LOGIN PASSWORD '{password}';\n"
            f"CREATE DATABASE {role} OWNER {role} ENCODING 'UTF8' TEMPLATE template0;\n"
            f"\\connect {role}\n"
            + "".join(f"CREATE EXTENSION IF NOT EXISTS {e};\n" for e in extensions))


def immich_sql(secret: Mapping[str, str]) -> str:
    """Immich's role and database, pgvector as its vector index (DB_VECTOR_EXTENSION=pgvector),
    cube and earthdistance for places."""
    return service_database_sql("immich", secret["immich-db"],
                                ("vector", "cube", "earthdistance"))


def intelligence_sql(secret: Mapping[str, str]) -> str:
    """The assistant's role and database with pgvector (without it recall falls back to
    full-text search)."""
    return service_database_sql("intelligence", secret["intelligence-db"], ("vector",))


def bot_env(settings: Settings, secret: Mapping[str, str]) -> str:
    """The assistant's settings (memu_intelligence.config), inside the stack's network."""
    return (f"MEMU_BOT_HOMESERVER=http://synapse:8008\n"
            f"MEMU_BOT_DATABASE_URL=postgresql://intelligence:{secret['intelligence-db']}"
            "@postgres:5432/intelligence\n"
            "MEMU_BOT_OLLAMA_URL=http://ollama:11434\n"
            f"MEMU_BOT_TIMEZONE={settings.timezone}\n"
            # How the family writes dates ("1/2") and times ("7:30") for its reminders.
            f"MEMU_BOT_LANGUAGE={settings.language}\n")


def render(settings: Settings, secret: dict[str, str]) -> dict[str, tuple[bytes, int]]:
    """Every file of the configuration: relative path → (content, permission bits).

    Files a container reads as its own non-root user are 0644; their directory
    (``/etc/memu/stack``, 0700) keeps them from the box's other users.
    """
    sql = (f"CREATE ROLE synapse LOGIN PASSWORD '{secret['synapse-db']}';\n"
           "CREATE DATABASE synapse OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' "
           "LC_CTYPE 'C' TEMPLATE template0;\n")
    hs = json.dumps(synapse_config(settings, secret), indent=1, sort_keys=True) + "\n"
    files = {f"secrets/{k}": (v.encode() + b"\n", 0o644 if k == "postgres-superuser" else 0o600)
             for k, v in secret.items()}
    files["postgres/initdb.d/20-synapse.sql"] = (sql.encode(), 0o644)
    files["postgres/initdb.d/30-immich.sql"] = (immich_sql(secret).encode(), 0o644)
    files["postgres/initdb.d/40-intelligence.sql"] = (intelligence_sql(secret).encode(), 0o644)
    files["intelligence/bot.env"] = (bot_env(settings, secret).encode(), 0o600)
    files["synapse/homeserver.yaml"] = (hs.encode(), 0o644)
    element = json.dumps(element_config(settings), indent=1, sort_keys=True) + "\n"
    files["element/config.json"] = (element.encode(), 0o644)
    serve = json.dumps(tailscale_serve_config(), indent=1, sort_keys=True) + "\n"
    files[TAILSCALE_SERVE] = (serve.encode(), 0o644)
    choices = dict(settings.optional)
    if settings.tailscale_auth_key:
        files[TAILSCALE_KEY] = (settings.tailscale_auth_key.encode() + b"\n", 0o600)
        choices.setdefault("tailscale", "on")
    files["stack.env"] = ((f"MEMU_SERVER_NAME={settings.server_name}\n"
                           f"MEMU_TIMEZONE={settings.timezone}\n"
                           + optional_services.env_lines(choices)).encode(), 0o644)
    return files


def load_secrets(config_dir: Path, extra: Sequence[str] = ()) -> dict[str, str]:
    """The stack's secrets (and the ``extra`` ones) from ``config_dir``/secrets, each made
    (32 random bytes, hex) when missing: a second run keeps them, so the database and
    homeserver still match. Nothing is written: see :func:`ensure_secrets`."""
    out = {}
    for name in (*SECRET_NAMES, *extra):
        try:
            out[name] = (config_dir / "secrets" / name).read_text().strip()
        except FileNotFoundError:
            out[name] = ""
    return fill_secrets(out)


def fill_secrets(found: Mapping[str, str]) -> dict[str, str]:
    """``found`` (secret name → its value, "" when there is none yet) with every missing
    value made: 32 random bytes, hex."""
    return {name: value or secrets.token_hex(32) for name, value in found.items()}


def ensure_secrets(config_dir: Path, extra: Sequence[str] = ()) -> int:
    """Write every secret :func:`load_secrets` names that is missing (0600, the
    PostgreSQL superuser's 0644 as :func:`render` says); return how many were made.

    Raises:
        OSError: ``config_dir`` cannot be written.
    """
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = 0
    for name, value in load_secrets(config_dir, extra).items():
        path = config_dir / "secrets" / name
        if not path.exists():
            mode = 0o644 if name == "postgres-superuser" else 0o600
            write_atomic(path, value.encode() + b"\n", mode=mode, dir_mode=0o755)
            made += 1
    return made


def apply(settings: Settings, config_dir: Path = CONFIG_DIR) -> Applied:
    """Write the configuration for ``settings`` into ``config_dir`` (made 0700) by the rule
    of :func:`memu_firstboot.config_files.write_all`: a second run changes nothing, and a
    file someone edited is kept, with the box's version beside it.

    Raises:
        OSError: ``config_dir`` cannot be written.
    """
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return write_all(render(settings, load_secrets(config_dir)), config_dir)


def write_bot_account(config_dir: Path, user_id: str, access_token: str,
                      device_id: str = "") -> Path:
    """Record the assistant's Matrix account (made through Synapse's admin API at setup) for
    its container; return the file (0600). Until it exists the assistant does not start.

    Raises:
        MemuError: ``user_id`` is not a full Matrix user ID or a value holds a line break.
        OSError: the file cannot be written.
    """
    if not user_id.startswith("@") or ":" not in user_id:
        raise MemuError(f"{user_id!r} is not a Matrix user ID", hint="e.g. @memu:smith.home")
    if any("\n" in v or "\r" in v for v in (user_id, access_token, device_id)):
        raise MemuError("a line break in the assistant's account")
    path = config_dir / BOT_ACCOUNT
    text = (f"MEMU_BOT_USER_ID={user_id}\nMEMU_BOT_ACCESS_TOKEN={access_token}\n"
            f"MEMU_BOT_DEVICE_ID={device_id}\n")
    write_atomic(path, text.encode(), mode=0o600, dir_mode=0o755)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 0, or 1 with a message and hint."""
    ap = argparse.ArgumentParser(prog="memu-stack-config", description=__doc__.split("\n")[0])
    ap.add_argument("--server-name", required=True)
    ap.add_argument("--config", type=Path, default=CONFIG_DIR)
    ap.add_argument("--timezone", default="UTC", help="the family's IANA time zone")
    ap.add_argument("--optional", action="append", default=[], metavar="SERVICE=CHOICE",
                    help=f"switch a RAM-hungry service ({', '.join(optional_services.NEEDS)}) "
                         "on, off or auto (the default, by the box's RAM)")
    args = ap.parse_args(argv)
    try:
        choices = dict(item.partition("=")[::2] for item in args.optional)
        print(apply(Settings(args.server_name, choices, timezone=args.timezone),
                    args.config).summary())
    except MemuError as e:
        print(f"memu: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"memu: hint: {e.hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
