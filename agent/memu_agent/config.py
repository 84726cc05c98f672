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

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memu_common import settings
from memu_common.settings import Setting, check_table, read_table
from memu_ota.config import OTA_SETTINGS, OtaConfig

DEFAULT_CONFIG_PATH = Path("/etc/memu/agent.toml")
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


# One row per setting. Adding a setting is adding a field to AgentConfig and a row here.
SETTINGS: tuple[Setting, ...] = (
    Setting("host", settings.listen_address),
    Setting("port", settings.port),
    Setting("device_name", settings.display_name),
    Setting("state_dir", settings.abs_path),
    Setting("issue_dir", settings.abs_path),
    Setting("watchdog", settings.boolean),
)
# Tables: ``[name]`` → (default, its rows).
_TABLES: Mapping[str, tuple[Any, Sequence[Setting]]] = {
    "ota": (OtaConfig(), OTA_SETTINGS),
}
check_table(AgentConfig, SETTINGS, tables=_TABLES)


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
            table, table_problems = read_table(default, parsers, value, source, f"{key}.")
            config = replace(config, **{key: table})
            problems += table_problems
        elif key in _TABLES:
            problems.append(f"{source}: {key!r} must be a table ([{key}]); ignored.")
        else:
            config, more = read_table(config, SETTINGS, {key: value}, source, "",
                                      known=[*(s.field for s in SETTINGS),
                                             *(f"[{t}]" for t in _TABLES)])
            problems += more
    return config, problems


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
