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
:data:`OTA_SETTINGS`; a bad value is reported by the caller and keeps its default.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from memu_common import osrelease, settings
from memu_common.files import read_json_object, write_json_atomic
from memu_common.settings import Setting, check_table, read_table

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
        boot_tries: boots a new version gets to pass the health gate before systemd-boot
            falls back to the previous slot (the UKI's ``TriesLeft=``).
        core_units: units that must be active for a boot to count as healthy.
        delta: try a delta update first (memu_ota.delta: only the changed blocks are
            downloaded), falling back to the full download when it cannot be done.
        keyring: the public keys a channel's ``SHA256SUMS.gpg`` must verify against (the
            one sysupdate uses).
        os_release: the image's os-release(5) files, tried in order; its ``VARIANT_ID``
            says which artifacts of a channel are this box's (:attr:`image_name`).
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
    boot_tries: int = 3
    core_units: tuple[str, ...] = ("memu-agent.service", "docker.service")
    delta: bool = True
    keyring: Path = Path("/usr/lib/systemd/import-pubring.gpg")
    os_release: tuple[Path, ...] = osrelease.PATHS

    @property
    def image_name(self) -> str:
        """What this box's release artifacts are named after (read from :attr:`os_release`
        on each call): ``memu-os``, or ``memu-os-hailo`` for an image built with the hailo
        option (:func:`memu_common.osrelease.image_name`)."""
        return osrelease.image_name(osrelease.variant(osrelease.read(self.os_release)))

    @property
    def definitions_dir(self) -> Path:
        """Where the rendered ``*.transfer`` files go (``--definitions=``)."""
        return self.runtime_dir / "sysupdate.d"


#: A channel name ("stable" or "beta").
parse_channel = settings.choice(Channel, "channel")

# One row per setting: how to check a value from the file.
OTA_SETTINGS: tuple[Setting, ...] = (
    Setting("channel", parse_channel),
    Setting("base_url", settings.base_url),
    Setting("check_interval_s", settings.seconds(60.0)),
    Setting("jitter_s", settings.seconds(0.0)),
    Setting("sysupdate", settings.abs_path),
    Setting("isolate", settings.boolean),
    Setting("template_dir", settings.abs_path),
    Setting("runtime_dir", settings.abs_path),
    Setting("state_dir", settings.abs_path),
    Setting("esp_dirs", settings.abs_paths),
    Setting("health_deadline_s", settings.seconds(10.0)),
    Setting("boot_tries", settings.positive(int)),
    Setting("core_units", settings.unit_names),
    Setting("delta", settings.boolean),
    Setting("keyring", settings.abs_path),
    Setting("os_release", settings.abs_paths),
)
check_table(OtaConfig, OTA_SETTINGS)
#: The rows the pages may override at run time (``settings.json``).
_OVERRIDES = tuple(s for s in OTA_SETTINGS if s.field in ("channel", "base_url"))


def apply_overrides(config: OtaConfig) -> tuple[OtaConfig, list[str]]:
    """Apply ``<state_dir>/settings.json`` (channel, base_url) over ``config``.

    Returns:
        The effective config and one message per ignored value (never raises).
    """
    path = config.state_dir / SETTINGS_FILE
    data = read_json_object(path) or {}
    return read_table(config, _OVERRIDES, data, str(path))


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
