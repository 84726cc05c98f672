"""The bot's one frozen configuration, read from the environment (and secret files).

Every setting is one row in ``_SETTINGS``: the environment variable, the field, a parser and
a default. A secret (the Matrix access token, the database password inside the DSN) may
instead come from a file named by ``<VAR>_FILE`` (the Docker/systemd credentials pattern),
so no secret ever needs to sit in an environment listing or in code.
"""

from __future__ import annotations

import dataclasses
import os
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memu_common import MemuError, models


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
        llm_timeout: deadline for one answer from the chat model.
        embed_timeout: deadline for one embedding call.
        search_timeout: deadline for the homeserver's room-history search.
        max_message_chars: longest message the bot accepts as a command argument.
        pool_min, pool_max: PostgreSQL connection pool bounds.
        sync_timeout_ms: long-poll timeout of ``/sync`` in milliseconds.
        reminder_poll: longest sleep of the reminder scheduler between checks.
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
    llm_timeout: float = 20.0
    embed_timeout: float = 3.0
    search_timeout: float = 5.0
    max_message_chars: int = 4000
    pool_min: int = 1
    pool_max: int = 4
    sync_timeout_ms: int = 30000
    reminder_poll: float = 30.0

    @property
    def server_name(self) -> str:
        """The homeserver's name: the part of ``user_id`` after the first ``:``."""
        return self.user_id.split(":", 1)[1]

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The family's timezone as a ``ZoneInfo``."""
        return zoneinfo.ZoneInfo(self.timezone)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the config from ``MEMU_BOT_*`` variables (see ``_SETTINGS``).

        Raises:
            MemuError: a required setting is missing, a value does not parse, or a
                ``*_FILE`` cannot be read.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var, field, parse, required in _SETTINGS:
            raw = _lookup(env, var)
            if raw is None:
                if required:
                    raise MemuError(
                        f"{var} is not set",
                        hint=f"set {var} (or {var}_FILE pointing at a file holding it)",
                    )
                continue
            try:
                values[field] = parse(raw)
            except (ValueError, zoneinfo.ZoneInfoNotFoundError) as e:
                raise MemuError(f"{var}={raw!r} is not valid: {e}") from e
        cfg = cls(**values)
        if not cfg.user_id.startswith("@") or ":" not in cfg.user_id:
            raise MemuError(
                f"MEMU_BOT_USER_ID={cfg.user_id!r} is not a Matrix user id",
                hint="use the full form, e.g. @memu:family.example",
            )
        return cfg

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (tests and tools use this)."""
        return dataclasses.replace(self, **changes)


def _lookup(env: Mapping[str, str], var: str) -> str | None:
    if value := env.get(var):
        return value.strip()
    if path := env.get(f"{var}_FILE"):
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise MemuError(f"cannot read {var}_FILE={path}: {e.strerror}") from e
    return None


def _tz(value: str) -> str:
    zoneinfo.ZoneInfo(value)
    return value


def _positive(parse: Callable[[str], float]) -> Callable[[str], Any]:
    def check(value: str) -> Any:
        n = parse(value)
        if n <= 0:
            raise ValueError("must be positive")
        return n

    return check


def _url(value: str) -> str:
    return value.rstrip("/")


# (environment variable, Config field, parser, required)
_SETTINGS: tuple[tuple[str, str, Callable[[str], Any], bool], ...] = (
    ("MEMU_BOT_HOMESERVER", "homeserver", _url, True),
    ("MEMU_BOT_USER_ID", "user_id", str, True),
    ("MEMU_BOT_ACCESS_TOKEN", "access_token", str, True),
    ("MEMU_BOT_DATABASE_URL", "database_url", str, True),
    ("MEMU_BOT_DEVICE_ID", "device_id", str, False),
    ("MEMU_BOT_OLLAMA_URL", "ollama_url", _url, False),
    ("MEMU_BOT_CHAT_MODEL", "chat_model", str, False),
    ("MEMU_BOT_EMBED_MODEL", "embed_model", str, False),
    ("MEMU_BOT_EMBED_DIM", "embed_dim", _positive(int), False),
    ("MEMU_BOT_TIMEZONE", "timezone", _tz, False),
    ("MEMU_BOT_LLM_TIMEOUT", "llm_timeout", _positive(float), False),
    ("MEMU_BOT_EMBED_TIMEOUT", "embed_timeout", _positive(float), False),
    ("MEMU_BOT_SEARCH_TIMEOUT", "search_timeout", _positive(float), False),
    ("MEMU_BOT_MAX_MESSAGE_CHARS", "max_message_chars", _positive(int), False),
    ("MEMU_BOT_POOL_MIN", "pool_min", _positive(int), False),
    ("MEMU_BOT_POOL_MAX", "pool_max", _positive(int), False),
    ("MEMU_BOT_SYNC_TIMEOUT_MS", "sync_timeout_ms", _positive(int), False),
    ("MEMU_BOT_REMINDER_POLL", "reminder_poll", _positive(float), False),
)
