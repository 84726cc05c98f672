"""Whether the box has a Hailo-8 or Hailo-8L NPU and whether it can be used, for
``/api/status`` (``npu``), read from sysfs and ``/dev`` (no ``lspci``).

Both chips are PCI device ``1e60:2864`` (vendor Hailo Technologies); the ``hailo_pci``
driver (hailort-drivers, built into the image when the build's ``hailo`` option is on)
binds it and makes ``/dev/hailo<N>``. Linux's sysfs PCI layout
(Documentation/ABI/testing/sysfs-bus-pci): ``/sys/bus/pci/devices/<address>/`` with
``vendor``, ``device`` (``0x…``) and a ``driver`` symlink once a driver is bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

HAILO_VENDOR = "0x1e60"
HAILO_8_DEVICE = "0x2864"


@dataclass(frozen=True)
class Npu:
    """What the box's NPU is doing.

    Attributes:
        state: "absent" (no Hailo on the PCI bus), "no-driver" (there, but no driver bound:
            an image built without the ``hailo`` option, or its firmware missing), "no-device"
            (bound, but no ``/dev/hailo*`` node), "ready".
        pci: the PCI address (``0000:01:00.0``), or None.
        driver: the bound driver's name, or None.
        device: the device node (``/dev/hailo0``), or None.
    """

    state: Literal["absent", "no-driver", "no-device", "ready"]
    pci: str | None = None
    driver: str | None = None
    device: str | None = None

    def report(self) -> dict[str, Any]:
        """The ``npu`` object of ``/api/status``."""
        return asdict(self)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip().lower()
    except OSError:
        return ""


def find(sys: Path = Path("/sys"), dev: Path = Path("/dev")) -> Npu:
    """The first Hailo-8/8L on the PCI bus and its driver and device node."""
    try:
        devices = sorted((sys / "bus/pci/devices").iterdir())
    except OSError:
        devices = []
    for device in devices:
        if (_read(device / "vendor"), _read(device / "device")) != (HAILO_VENDOR,
                                                                    HAILO_8_DEVICE):
            continue
        driver = (device / "driver").resolve().name if (device / "driver").exists() else None
        if driver is None:
            return Npu("no-driver", device.name)
        nodes = sorted(dev.glob("hailo[0-9]*"))
        if not nodes:
            return Npu("no-device", device.name, driver)
        return Npu("ready", device.name, driver, str(nodes[0]))
    return Npu("absent")
