"""The bot's one frozen configuration, read from the environment (and secret files).

Every setting is one row in :data:`SETTINGS` (``memu_common.settings``): the field, its
environment variable (``MEMU_BOT_<FIELD>``) and a parser; the default is the field's. A
secret (the Matrix access token, the database password inside the DSN) may instead come from
a file named by ``<VAR>_FILE`` (the Docker/systemd credentials pattern), so no secret ever
needs to sit in an environment listing or in code.
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memu_common import MemuError, models, settings
from memu_common.settings import Setting, check_table, read_environment
from memu_intelligence.conventions import Locale


@dataclass(frozen=True)
class Config:
    """Everything the bot needs to run. Durations are in seconds.

    Attributes:
        homeserver: base URL of the Matrix homeserver, e.g. ``http://synapse:8008``.
        user_id: the bot's full Matrix user id, e.g. ``@memu:family.example``.
        access_token: the bot's access token (token login; no password is ever used).
        device_id: the device id the token belongs to (optional).
        database_url: libpq connection string for PostgreSQL.
        ollama_url: base URL of the Ollama HTTP API.
        chat_model: Ollama model used for answers.
        embed_model: Ollama model used for embeddings (``/api/embed``).
        embed_dim: dimension of ``embed_model``'s vectors (sizes the ``vector`` column).
        timezone: IANA zone of the family, used to read and show reminder times.
        language: the family's language tag from the first-boot form (``en-GB``): how
            numeric dates (``1/2``) and bare times (``7:30``) read (``timeparse.Locale``).
        llm_timeout: deadline for one answer from the chat model.
        embed_timeout: deadline for one embedding call.
        search_timeout: deadline for the homeserver's room-history search.
        max_message_chars: longest message the bot accepts as a command argument.
        pool_min, pool_max: PostgreSQL connection pool bounds.
        sync_timeout_ms: long-poll timeout of ``/sync`` in milliseconds.
        reminder_poll: longest sleep of the reminder scheduler between checks.
        away_after: seconds after which a reply says the bot was away when the command was
            sent (it was down, or catching up).
        heartbeat_file: touched after every handled sync ("" for none); the container's
            health check reads its age (``/usr/lib/memu/intelligence-alive``), which costs
            a bare interpreter start instead of importing the bot.
    """

    homeserver: str
    user_id: str
    access_token: str
    database_url: str
    device_id: str = ""
    ollama_url: str = "http://127.0.0.1:11434"
    chat_model: str = models.CHAT_MODEL
    embed_model: str = models.EMBED_MODEL
    embed_dim: int = 768
    timezone: str = "UTC"
    language: str = "en"
    llm_timeout: float = 20.0
    embed_timeout: float = 3.0
    search_timeout: float = 5.0
    max_message_chars: int = 4000
    pool_min: int = 1
    pool_max: int = 4
    sync_timeout_ms: int = 30000
    reminder_poll: float = 30.0
    away_after: float = 120.0
    heartbeat_file: str = ""

    @property
    def server_name(self) -> str:
        """The homeserver's name: the part of ``user_id`` after the first ``:``."""
        return self.user_id.split(":", 1)[1]

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The family's timezone as a ``ZoneInfo``."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def locale(self) -> Locale:
        """How the family writes dates and times, from ``language``."""
        return Locale.from_tag(self.language)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the config from ``MEMU_BOT_*`` variables (see :data:`SETTINGS`); a secret
        may come from the file named by ``<VAR>_FILE`` instead.

        Raises:
            MemuError: a required setting is missing, a value does not parse, or a
                ``*_FILE`` cannot be read.
        """
        cfg = cls(**read_environment(SETTINGS, env))
        if not cfg.user_id.startswith("@") or ":" not in cfg.user_id:
            raise MemuError(
                f"MEMU_BOT_USER_ID={cfg.user_id!r} is not a Matrix user id",
                hint="use the full form, e.g. @memu:family.example",
            )
        return cfg

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (tests and tools use this)."""
        return dataclasses.replace(self, **changes)


def _url(value: str) -> str:
    return settings.http_url(value).rstrip("/")


def _row(field: str, parse: Callable[[Any], Any], *, required: bool = False) -> Setting:
    return Setting(field, parse, env=f"MEMU_BOT_{field.upper()}", required=required)


# One row per setting; its variable is MEMU_BOT_<FIELD>.
SETTINGS: tuple[Setting, ...] = (
    _row("homeserver", _url, required=True),
    _row("user_id", settings.text, required=True),
    _row("access_token", settings.text, required=True),
    _row("database_url", settings.text, required=True),
    _row("device_id", settings.text),
    _row("ollama_url", _url),
    _row("chat_model", settings.text),
    _row("embed_model", settings.text),
    _row("embed_dim", settings.positive(int)),
    _row("timezone", settings.time_zone),
    _row("language", settings.text),
    _row("llm_timeout", settings.positive(float)),
    _row("embed_timeout", settings.positive(float)),
    _row("search_timeout", settings.positive(float)),
    _row("max_message_chars", settings.positive(int)),
    _row("pool_min", settings.positive(int)),
    _row("pool_max", settings.positive(int)),
    _row("sync_timeout_ms", settings.positive(int)),
    _row("reminder_poll", settings.positive(float)),
    _row("away_after", settings.positive(float)),
    _row("heartbeat_file", settings.text),
)
check_table(Config, SETTINGS)
