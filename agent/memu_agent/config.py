"""The agent's configuration: one frozen dataclass, read from a small TOML file.

The file is optional (``/etc/memu/agent.toml``; ``$MEMU_AGENT_CONFIG`` or ``--config``
override the path). Every key is optional and flat, e.g.::

    port = 8080
    device_name = "Okafor family box"

    [ota]                     # update settings, see memu_ota.config.OtaConfig
    channel = "beta"

A broken file must not put the agent into a crash loop (the box would have no first-boot
page at all), so :func:`load_config` never raises for a bad file: it returns the defaults
for whatever is wrong, and a list of messages that say which file, which key, what is wrong
and what to do.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from memu_ota.config import OTA_PARSERS, OtaConfig

DEFAULT_CONFIG_PATH = Path("/etc/memu/agent.toml")
_T = TypeVar("_T")
CONFIG_ENV = "MEMU_AGENT_CONFIG"


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent can be told.

    Attributes:
        host: the IP address to listen on; "" (the default) listens on every address, IPv4
            and IPv6 where the kernel has it.
        port: the TCP port of the web server (0 picks a free port; tests use that).
        device_name: the name the family sees on the pages and the console.
        state_dir: where the agent keeps its state (setup token, setup marker); mode 0700.
        issue_dir: where the console greeting snippet goes (read by agetty).
        watchdog: send systemd watchdog pings when systemd asks for them.
        ota: the ``[ota]`` table: update channel, server, health gate (memu_ota.config).
    """

    host: str = ""
    port: int = 80
    device_name: str = "memu"
    state_dir: Path = Path("/var/lib/memu")
    issue_dir: Path = Path("/run/issue.d")
    watchdog: bool = True
    ota: OtaConfig = field(default_factory=OtaConfig)


def _host(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            msg = f'{value!r} is not an IP address (use "" for every address)'
            raise ValueError(msg) from None
    return value


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {type(value).__name__}")
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is out of range (0-65535)")
    return value


def _device_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    name = value.strip()
    if not name or len(name) > 63:
        raise ValueError("must be 1 to 63 characters")
    if not name.isprintable():
        raise ValueError("must not contain control characters")
    return name


def _abs_path(value: Any) -> Path:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    return Path(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {type(value).__name__}")
    return value


# One row per setting: how to check a value from the file. Adding a setting is adding a
# field to AgentConfig and a row here.
_PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "host": _host,
    "port": _port,
    "device_name": _device_name,
    "state_dir": _abs_path,
    "issue_dir": _abs_path,
    "watchdog": _bool,
}
# Tables: ``[name]`` → (default, its rows).
_TABLES: Mapping[str, tuple[Any, Mapping[str, Callable[[Any], Any]]]] = {
    "ota": (OtaConfig(), OTA_PARSERS),
}
assert set(_PARSERS) | set(_TABLES) == {f.name for f in fields(AgentConfig)}


def config_path(cli_path: str | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """Pick the config file: ``--config``, then ``$MEMU_AGENT_CONFIG``, then the default.

    Returns:
        The path, and whether it was asked for explicitly (a missing explicit file is
        worth a warning; a missing default file is normal).
    """
    if cli_path:
        return Path(cli_path), True
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), True
    return DEFAULT_CONFIG_PATH, False


def parse_config(data: Mapping[str, Any], source: str) -> tuple[AgentConfig, list[str]]:
    """Build an AgentConfig from parsed TOML; a bad or unknown key keeps its default.

    Args:
        data: the parsed TOML document (a flat table).
        source: the file name, for messages.

    Returns:
        The config and one message per problem (empty when all is well).
    """
    config = AgentConfig()
    problems: list[str] = []
    for key, value in data.items():
        if key in _TABLES and isinstance(value, dict):
            default, parsers = _TABLES[key]
            table, table_problems = _parse_table(default, parsers, value, source, f"{key}.")
            config = replace(config, **{key: table})
            problems += table_problems
        elif key in _TABLES:
            problems.append(f"{source}: {key!r} must be a table ([{key}]); ignored.")
        else:
            config, more = _parse_table(config, _PARSERS, {key: value}, source, "",
                                        known=[*_PARSERS, *(f"[{t}]" for t in _TABLES)])
            problems += more
    return config, problems


def _parse_table(
    default: _T,
    parsers: Mapping[str, Callable[[Any], Any]],
    data: Mapping[str, Any],
    source: str,
    prefix: str,
    known: list[str] | None = None,
) -> tuple[_T, list[str]]:
    """Check each key of one TOML table with its row in ``parsers``; a bad or unknown key
    keeps its default and adds a message."""
    result = default
    problems: list[str] = []
    known_text = ", ".join(known if known is not None else parsers)
    for key, value in data.items():
        name = prefix + key
        parser = parsers.get(key)
        if parser is None:
            problems.append(
                f"{source}: unknown key {name!r}, ignored. Known keys: {known_text}. "
                f"Remove it or fix its spelling."
            )
            continue
        try:
            result = replace(result, **{key: parser(value)})  # type: ignore[type-var]
        except ValueError as e:
            fallback = getattr(default, key)
            shown = str(fallback) if isinstance(fallback, Path) else fallback
            problems.append(
                f"{source}: key {name!r}: {e}; using the default {shown!r}. "
                f"Fix or remove {name!r} in {source}."
            )
    return result, problems


def load_config(path: Path, *, explicit: bool = False) -> tuple[AgentConfig, list[str]]:
    """Read the TOML file at ``path`` into an AgentConfig. Never raises for a bad file.

    Args:
        path: the file to read.
        explicit: the path was asked for (``--config``/env); a missing file is then a problem.

    Returns:
        The config (defaults for anything missing or wrong) and one message per problem.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            return AgentConfig(), [f"{path}: no such file; using the defaults."]
        return AgentConfig(), []
    except tomllib.TOMLDecodeError as e:
        return AgentConfig(), [
            f"{path}: not valid TOML ({e}); using the defaults for every key. "
            f'Fix the file (e.g. strings need quotes: device_name = "memu") or remove it.'
        ]
    except (OSError, UnicodeDecodeError) as e:
        return AgentConfig(), [
            f"{path}: cannot read it ({e}); using the defaults. "
            f"Check its permissions, or remove it."
        ]
    return parse_config(data, os.fspath(path))
