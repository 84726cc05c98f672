"""Factory reset, from the agent API and from the kernel command line (boot menu): the
family's data and settings are erased, the box comes back as on its first day (new setup
token), both OS slots stay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from ota_support import api, boot_id, booted_vm, labels, setup_code, wait_rebooted, wait_version

from memu_dev.vm import VM


@pytest.fixture
def vm(built_image: Path, request: pytest.FixtureRequest) -> Iterator[VM]:
    with booted_vm(request.node.name, built_image) as machine:
        yield machine


def _family_data(vm: VM) -> str:
    """Leave family data and settings behind; return the current setup token."""
    vm.sh("echo photos > /var/lib/memu/canary && mkdir -p /etc/memu && "
          "printf 'device_name = \"Okafor box\"\\n' > /etc/memu/agent.toml && "
          "mkdir -p /var/lib/docker/volumes/family && echo db > /var/lib/docker/volumes/family/x")
    return vm.sh("cat /var/lib/memu/setup-token").strip()


def _assert_first_day(vm: VM, old_token: str) -> None:
    assert vm.sh_status("test -e /var/lib/memu/canary") != 0
    assert vm.sh_status("test -e /etc/memu/agent.toml") != 0
    assert vm.sh_status("test -e /var/lib/docker/volumes/family/x") != 0
    assert vm.sh_status("test -e /var/lib/memu/factory-reset") != 0
    token = vm.sh("cat /var/lib/memu/setup-token").strip()
    assert token and token != old_token
    _, status = api(vm, "GET", "/api/status")
    assert status["setup"]["state"] == "pending"
    assert status["device_name"] == "memu"
    # Docker starts on empty data after the reset; give it a deadline, not a snapshot.
    vm.sh("timeout 300 sh -c 'until systemctl is-active -q docker.service; do sleep 2; done'",
          timeout=330)


def test_factory_reset_from_api_and_from_kernel_cmdline(vm: VM) -> None:
    slots_before = labels(vm)
    token = _family_data(vm)
    # A wrong confirmation does nothing.
    status, body = api(vm, "POST", "/api/factory-reset", {"confirm": "yes"},
                       headers=setup_code(vm))
    assert status == 400, body
    boot = boot_id(vm)
    status, body = api(vm, "POST", "/api/factory-reset",
                       {"confirm": "erase all family data"}, headers=setup_code(vm))
    assert status == 202, body
    wait_rebooted(vm, boot, "0.1.0")
    _assert_first_day(vm, token)
    assert labels(vm) == slots_before
    # The reset came from the marker: normal boots never carry the reset switch.
    assert "memu.factory_reset" not in vm.sh("cat /proc/cmdline")

    # From the boot menu: memu.factory_reset=1 added to the kernel command line (here through
    # systemd-stub's SMBIOS hook, as the boot menu's editor would).
    token = _family_data(vm)
    vm.poweroff()
    again = VM(replace(vm.config, extra_cmdline="memu.factory_reset=1"))
    again.ports = vm.ports
    again.start()
    try:
        wait_version(again, "0.1.0", timeout=600)
        again.wait_for_shell(240)
        assert "memu.factory_reset=1" in again.sh("cat /proc/cmdline")
        _assert_first_day(again, token)
        assert labels(again) == slots_before
    finally:
        again.stop()
