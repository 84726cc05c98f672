"""One table of settings rows for every place the box reads settings from.

A :class:`Setting` names one field of a frozen dataclass and how to check a value for it (a
*parser*: takes the raw value, returns the checked one, raises ``ValueError`` with a message
a person can act on). The agent's TOML file (``memu_agent.config``), its ``[ota]`` table and
``settings.json`` overrides (``memu_ota.config``) and the bot's environment
(``memu_intelligence.config``) and the first-boot setup form (``memu_firstboot.form``) are
tables of such rows, read by :func:`read_table` (lenient: a bad value keeps its default and
becomes a message; a broken file must never stop the agent), :func:`read_environment`
(strict: the bot does not start on a bad value) or :func:`check_fields` (a message per field,
for a form). The parsers the tables share live here once.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from memu_common.errors import MemuError

#: A parser: the raw value (from TOML, JSON, the environment or a form) → the checked value.
#: Raises ``ValueError`` whose message says what is wrong, in words.
Parser = Callable[[Any], Any]
_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True)
class Setting:
    """One row of a settings table.

    Attributes:
        field: the dataclass field (and the TOML/JSON key) it sets.
        parse: checks a raw value (see :data:`Parser`).
        env: the environment variable that carries it (:func:`read_environment`), or "".
        required: :func:`read_environment` fails when it is missing.
    """

    field: str
    parse: Parser
    env: str = ""
    required: bool = False


def check_table(cls: type, table: Sequence[Setting], tables: Iterable[str] = ()) -> None:
    """Assert that ``table`` has exactly one row per field of the dataclass ``cls``, besides
    the fields named in ``tables`` (nested tables, read by the caller).

    Raises:
        AssertionError: a field has no row, or a row names no field (a programming error,
            caught by the first import).
    """
    names = [s.field for s in table]
    assert len(names) == len(set(names)), f"{cls.__name__}: a setting is listed twice"
    assert set(names) | set(tables) == {f.name for f in fields(cls)}, (
        f"{cls.__name__}: rows {sorted(names)} do not match its fields"
    )


def read_table(
    default: _T,
    table: Sequence[Setting],
    data: Mapping[str, Any],
    source: str,
    prefix: str = "",
    known: Iterable[str] | None = None,
) -> tuple[_T, list[str]]:
    """Check each key of one TOML/JSON table against its row; never raises for bad data.

    Args:
        default: the dataclass instance whose fields a good value replaces.
        table: the rows (keys are the rows' ``field``).
        data: the parsed table.
        source: the file name, for messages.
        prefix: shown before each key in messages (``"ota."`` for ``[ota]``).
        known: the key names listed in the message for an unknown key (default: the rows').

    Returns:
        ``default`` with every good value applied, and one message per bad or unknown key
        (which keeps its default): which file, which key, what is wrong, what to do.
    """
    rows = {s.field: s for s in table}
    result = default
    problems: list[str] = []
    known_text = ", ".join(known if known is not None else rows)
    for key, value in data.items():
        name = prefix + key
        row = rows.get(key)
        if row is None:
            problems.append(
                f"{source}: unknown key {name!r}, ignored. Known keys: {known_text}. "
                f"Remove it or fix its spelling."
            )
            continue
        try:
            result = replace(result, **{key: row.parse(value)})  # type: ignore[type-var]
        except ValueError as e:
            fallback = getattr(default, key)
            shown = str(fallback) if isinstance(fallback, Path) else fallback
            problems.append(
                f"{source}: key {name!r}: {e}; using the default {shown!r}. "
                f"Fix or remove {name!r} in {source}."
            )
    return result, problems


def check_fields(table: Sequence[Setting], data: Mapping[str, Any], missing: str
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """Check every row against a submitted form; collect one message per bad field.

    Args:
        table: the rows (the form's field names are their ``field``).
        data: field → submitted value; a missing or empty value of a ``required`` row is
            an error, of an optional row is passed to its parser as "".
        missing: the message for a required field left empty.

    Returns:
        (field → checked value for every good field, field → the parser's message for every
        bad one). Unknown keys in ``data`` are ignored (a form also carries its buttons).
    """
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for row in table:
        raw = data.get(row.field, "")
        if row.required and (raw is None or (isinstance(raw, str) and not raw.strip())):
            errors[row.field] = missing
            continue
        try:
            values[row.field] = row.parse(raw)
        except ValueError as e:
            errors[row.field] = str(e)
    return values, errors


def environment_value(env: Mapping[str, str], var: str) -> str | None:
    """``$var`` (stripped), else the contents of the file named by ``$var_FILE`` (the
    Docker/systemd credentials pattern, so a secret never sits in an environment listing);
    None when neither is set.

    Raises:
        MemuError: ``$var_FILE`` names a file that cannot be read.
    """
    if value := env.get(var):
        return value.strip()
    if path := env.get(f"{var}_FILE"):
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise MemuError(f"cannot read {var}_FILE={path}: {e.strerror}") from e
    return None


def read_environment(table: Sequence[Setting], env: Mapping[str, str] | None = None
                     ) -> dict[str, Any]:
    """The checked values of the rows that have an ``env`` variable, by field name.

    Args:
        table: the rows; rows without ``env`` are skipped.
        env: the environment (default ``os.environ``).

    Returns:
        field → checked value, for every variable that is set (missing optional ones are
        left out, so the dataclass default applies).

    Raises:
        MemuError: a required variable is missing, a value does not parse, or a ``*_FILE``
            cannot be read; the message names the variable.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for row in table:
        if not row.env:
            continue
        raw = environment_value(env, row.env)
        if raw is None:
            if row.required:
                raise MemuError(f"{row.env} is not set",
                                hint=f"set {row.env} (or {row.env}_FILE naming a file holding it)")
            continue
        try:
            values[row.field] = row.parse(raw)
        except ValueError as e:
            raise MemuError(f"{row.env}={raw!r} is not valid: {e}") from e
    return values


# -- parsers ----------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return type(value).__name__


def text(value: Any) -> str:
    """Any string, as it is."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_type_name(value)}")
    return value


def boolean(value: Any) -> bool:
    """``true`` or ``false`` (TOML/JSON booleans only: "yes" is a mistake worth reporting)."""
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_type_name(value)}")
    return value


def abs_path(value: Any) -> Path:
    """An absolute path (a string starting with ``/``)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_type_name(value)}")
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    return Path(value)


def abs_paths(value: Any) -> tuple[Path, ...]:
    """A non-empty list of absolute paths."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of absolute paths")
    return tuple(abs_path(v) for v in value)


def port(value: Any) -> int:
    """A TCP port number, 0-65535 (0: any free port)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {_type_name(value)}")
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is out of range (0-65535)")
    return value


def listen_address(value: Any) -> str:
    """An IP address to listen on, or "" for every address."""
    address = text(value)
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f'{address!r} is not an IP address (use "" for every address)'
                             ) from None
    return address


def display_name(value: Any) -> str:
    """A name people see: 1 to 63 printable characters, surrounding spaces removed."""
    name = text(value).strip()
    if not name or len(name) > 63:
        raise ValueError("must be 1 to 63 characters")
    if not name.isprintable():
        raise ValueError("must not contain control characters")
    return name


def seconds(low: float) -> Parser:
    """A parser for a number of seconds of at least ``low`` (int or float; → float)."""
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number of seconds, not {_type_name(value)}")
        if value < low:
            raise ValueError(f"{value} is too small (at least {low})")
        return float(value)

    return parse


def positive(kind: type[int] | type[float]) -> Parser:
    """A parser for a number greater than 0 of ``kind``, from a number or its text (the
    environment carries text)."""
    def parse(value: Any) -> int | float:
        if isinstance(value, bool):
            raise ValueError("must be a number, not true/false")
        number = kind(value)
        if number <= 0:
            raise ValueError("must be positive")
        return number

    return parse


def choice(enum: type[_E], noun: str) -> Callable[[Any], _E]:
    """A parser for one of ``enum``'s values (a ``StrEnum``); ``noun`` names what it is in
    messages ("'nightly' is not a channel (use one of …)")."""
    def parse(value: Any) -> _E:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_type_name(value)}")
        try:
            return enum(value)
        except ValueError:
            names = ", ".join(repr(str(c)) for c in enum)
            raise ValueError(f"{value!r} is not a {noun} (use one of {names})") from None

    return parse


def http_url(value: Any) -> str:
    """An ``http://`` or ``https://`` URL with a host."""
    got = text(value)
    url = urllib.parse.urlsplit(got)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"{got!r} is not an http:// or https:// URL")
    if url.query or url.fragment or any(c.isspace() for c in got):
        raise ValueError(f"{got!r} must not contain spaces, '?' or '#'")
    return got


def base_url(value: Any) -> str:
    """An :func:`http_url` ending in ``/`` (a base that paths are appended to)."""
    url = http_url(value)
    if not url.endswith("/"):
        raise ValueError(f"{url!r} must end with '/'")
    return url


def time_zone(value: Any) -> str:
    """An IANA time zone name this system knows (e.g. ``Europe/London``)."""
    zone = text(value).strip()
    try:
        zoneinfo.ZoneInfo(zone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError(f"{zone!r} is not a time zone (e.g. Europe/London)") from None
    return zone


def unit_names(value: Any) -> tuple[str, ...]:
    """A list of systemd unit names (``docker.service``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of unit names")
    bad = [v for v in value if "." not in v or "/" in v or any(c.isspace() for c in v)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a unit name (e.g. 'docker.service')")
    return tuple(value)
