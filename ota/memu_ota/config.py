"""The update settings: one frozen dataclass, read from the agent's ``[ota]`` TOML table,
with channel and base URL overridable at run time.

``/etc/memu/agent.toml``::

    [ota]
    channel = "stable"                          # or "beta"
    base_url = "https://updates.example/memu/"  # channels are <base_url><channel>/
    check_interval_s = 21600

The first-boot and admin pages change channel and base URL without a rebuild through
``<state_dir>/settings.json`` (``{"channel": "beta", "base_url": "https://…/"}``), which
wins over the TOML file (see :func:`apply_overrides`). Each setting is one row in
:data:`OTA_PARSERS`; a bad value is reported by the caller and keeps its default.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from memu_common.files import read_json_object, write_json_atomic

SETTINGS_FILE = "settings.json"


class Channel(enum.StrEnum):
    """The release channels a box can follow."""

    STABLE = "stable"
    BETA = "beta"


@dataclass(frozen=True)
class OtaConfig:
    """Everything the updater and the health gate can be told.

    Attributes:
        channel: the release channel.
        base_url: http(s) URL ending in ``/``; channel ``c`` lives at ``<base_url><c>/``.
        check_interval_s: seconds between background checks for a new version.
        jitter_s: up to this many random seconds added to each wait, so that many boxes do
            not hit the server at once.
        sysupdate: the systemd-sysupdate binary (Debian keeps it off ``PATH``).
        isolate: run sysupdate in a transient unit through ``systemd-run`` (as the device
            does); tests turn it off to run a fake sysupdate directly.
        template_dir: shipped ``*.transfer.in`` files with ``@SOURCE_URL@``.
        runtime_dir: the agent's run-time directory; definitions go to its
            ``sysupdate.d``, sysupdate's notify socket lives here too.
        state_dir: persistent update state (``state.json``, ``settings.json``,
            ``health-failure.json``).
        esp_dirs: where the UKIs (boot entries) live; the first that exists is used.
        health_deadline_s: seconds the boot health gate waits for the core units.
        core_units: units that must be active for a boot to count as healthy.
    """

    channel: Channel = Channel.STABLE
    base_url: str = "https://updates.memu.invalid/os/"
    check_interval_s: float = 6 * 3600.0
    jitter_s: float = 3600.0
    sysupdate: Path = Path("/usr/lib/systemd/systemd-sysupdate")
    isolate: bool = True
    template_dir: Path = Path("/usr/lib/memu/sysupdate.d")
    runtime_dir: Path = Path("/run/memu")
    state_dir: Path = Path("/var/lib/memu/ota")
    esp_dirs: tuple[Path, ...] = (Path("/efi/EFI/Linux"), Path("/boot/EFI/Linux"))
    health_deadline_s: float = 300.0
    core_units: tuple[str, ...] = ("memu-agent.service", "docker.service")

    @property
    def definitions_dir(self) -> Path:
        """Where the rendered ``*.transfer`` files go (``--definitions=``)."""
        return self.runtime_dir / "sysupdate.d"


def parse_channel(value: Any) -> Channel:
    """A channel name ("stable" or "beta")."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    try:
        return Channel(value)
    except ValueError:
        known = ", ".join(repr(str(c)) for c in Channel)
        raise ValueError(f"{value!r} is not a channel (use one of {known})") from None


def parse_base_url(value: Any) -> str:
    """An ``http://`` or ``https://`` URL with a host, ending in ``/``."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if not value.endswith("/"):
        raise ValueError(f"{value!r} must end with '/'")
    if url.query or url.fragment or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must not contain spaces, '?' or '#'")
    return value


def _seconds(low: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number of seconds, not {type(value).__name__}")
        if value < low:
            raise ValueError(f"{value} is too small (at least {low})")
        return float(value)

    return parse


def _abs_path(value: Any) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    return Path(value)


def _paths(value: Any) -> tuple[Path, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of absolute paths")
    return tuple(_abs_path(v) for v in value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {type(value).__name__}")
    return value


def _units(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of unit names")
    bad = [v for v in value if "." not in v or "/" in v or any(c.isspace() for c in v)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a unit name (e.g. 'docker.service')")
    return tuple(value)


# One row per setting: how to check a value from the file.
OTA_PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "channel": parse_channel,
    "base_url": parse_base_url,
    "check_interval_s": _seconds(60.0),
    "jitter_s": _seconds(0.0),
    "sysupdate": _abs_path,
    "isolate": _bool,
    "template_dir": _abs_path,
    "runtime_dir": _abs_path,
    "state_dir": _abs_path,
    "esp_dirs": _paths,
    "health_deadline_s": _seconds(10.0),
    "core_units": _units,
}
assert set(OTA_PARSERS) == {f.name for f in fields(OtaConfig)}


def apply_overrides(config: OtaConfig) -> tuple[OtaConfig, list[str]]:
    """Apply ``<state_dir>/settings.json`` (channel, base_url) over ``config``.

    Returns:
        The effective config and one message per ignored value (never raises).
    """
    path = config.state_dir / SETTINGS_FILE
    data = read_json_object(path) or {}
    problems: list[str] = []
    parsers: dict[str, Callable[[Any], Any]] = {
        "channel": parse_channel,
        "base_url": parse_base_url,
    }
    for key, parser in parsers.items():
        if key in data:
            try:
                config = replace(config, **{key: parser(data[key])})
            except ValueError as e:
                problems.append(f"{path}: {key!r}: {e}; ignored")
    return config, problems


def save_overrides(config: OtaConfig) -> None:
    """Persist ``config``'s channel and base URL to ``<state_dir>/settings.json``.

    Raises:
        OSError: the state directory cannot be written.
    """
    write_json_atomic(
        config.state_dir / SETTINGS_FILE,
        {"channel": str(config.channel), "base_url": config.base_url},
    )


def clear_overrides(config: OtaConfig) -> None:
    """Remove ``<state_dir>/settings.json``, so the image's settings apply again.

    Raises:
        OSError: it exists and cannot be removed.
    """
    (config.state_dir / SETTINGS_FILE).unlink(missing_ok=True)
