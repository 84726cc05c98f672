"""The NPU in /api/status, from a fake sysfs PCI bus and /dev: absent, present without a
driver, bound without a device node, ready."""

from __future__ import annotations

from pathlib import Path

from memu_agent.npu import Npu, find


def _pci(sys: Path, address: str, vendor: str, device: str) -> Path:
    real = sys / "devices/pci0000:00" / address
    real.mkdir(parents=True)
    (real / "vendor").write_text(vendor + "\n")
    (real / "device").write_text(device + "\n")
    link = sys / "bus/pci/devices" / address
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real)
    return real


def test_the_hailo_is_found_on_the_pci_bus_with_its_driver_and_node(tmp_path: Path) -> None:
    sys, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    assert find(sys, dev) == Npu("absent")  # no PCI bus at all
    _pci(sys, "0000:00:1f.0", "0x8086", "0x54ef")  # an Intel bridge
    assert find(sys, dev) == Npu("absent")
    hailo = _pci(sys, "0000:01:00.0", "0x1e60", "0x2864")
    assert find(sys, dev) == Npu("no-driver", "0000:01:00.0")
    driver = sys / "bus/pci/drivers/hailo_pci"
    driver.mkdir(parents=True)
    (hailo / "driver").symlink_to(driver)
    assert find(sys, dev) == Npu("no-device", "0000:01:00.0", "hailo_pci")
    (dev / "hailo0").touch()
    npu = find(sys, dev)
    assert npu == Npu("ready", "0000:01:00.0", "hailo_pci", str(dev / "hailo0"))
    assert npu.report() == {"state": "ready", "pci": "0000:01:00.0", "driver": "hailo_pci",
                            "device": str(dev / "hailo0")}
