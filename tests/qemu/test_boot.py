"""The walking skeleton, proven on a booted N100 image: the agent comes up READY and serves
the first-boot page, the setup token is on the console and private, nothing failed, and
nothing changes the box before it is claimed."""

from __future__ import annotations

import json
import re
from typing import Any

from memu_dev.channel import api, setup_code
from memu_dev.vm import VM


def test_first_boot_page_answers(booted: VM) -> None:
    status, body = booted.http_get("/")
    assert status == 200
    assert "<form" in body and "memu" in body.lower()


def test_status_reports_built_version(booted: VM, os_version: str) -> None:
    status, body = booted.http_get("/api/status")
    assert status == 200
    data = json.loads(body)
    assert data["version"] == os_version
    assert data["setup"]["state"] == "pending"
    assert data["uptime_s"] > 0
    # the boot chain (memu_ota.boot.SystemdBoot) names the UKI systemd-boot booted, still
    # counting its tries on this first boot
    assert re.fullmatch(rf"memu-os_{re.escape(os_version)}(\+\d+(-\d+)?)?\.efi",
                        data["boot"]["entry"]), data["boot"]
    # QEMU has no Hailo: read from the guest's own PCI bus
    assert data["npu"] == {"state": "absent", "pci": None, "driver": None, "device": None}


def test_agent_is_notify_ready_with_status(booted: VM) -> None:
    props = booted.sh("systemctl show -p Type -p ActiveState -p SubState -p StatusText "
                      "-p WatchdogUSec -p NRestarts memu-agent.service")
    assert "Type=notify" in props
    assert "ActiveState=active" in props and "SubState=running" in props
    assert re.search(r"StatusText=\S", props), props
    assert "WatchdogUSec=30s" in props
    assert "NRestarts=0" in props


def test_setup_token_on_console_and_private(booted: VM) -> None:
    token = booted.sh("cat /var/lib/memu/setup-token").strip()
    assert re.fullmatch(r"[a-z0-9-]{8,40}", token), token
    assert booted.sh("stat -c '%a %U' /var/lib/memu/setup-token").strip() == "600 root"
    # an unprivileged user cannot read it, nor the console message that carries it
    assert booted.sh_status("setpriv --reuid=65534 --regid=65534 --clear-groups "
                            "cat /var/lib/memu/setup-token") != 0
    assert booted.sh_status("setpriv --reuid=65534 --regid=65534 --clear-groups "
                            "cat /run/issue.d/50-memu.issue") != 0
    # agetty printed it on the serial console before the login
    console = booted.serial_log.read_text(errors="replace")
    assert token in console
    assert "memu.local" in console


def test_system_is_running_without_failed_units(booted: VM) -> None:
    state = booted.sh("systemctl is-system-running --wait", timeout=240, check=False)
    failed = booted.sh("systemctl --failed --no-legend --plain")
    assert state.strip().splitlines()[-1] == "running", failed
    assert failed.strip() == ""


def test_no_console_prompt_stalled_the_boot(booted: VM) -> None:
    console = booted.serial_log.read_text(errors="replace")
    for prompt in ("Please enter", "Please configure your system", "Press any key",
                   "Give root password", "emergency mode"):
        assert prompt not in console
    assert booted.sh("systemctl show -p ActiveState systemd-firstboot.service").strip() in (
        "ActiveState=inactive", "ActiveState=active")


def test_box_identity_network_and_docker(booted: VM) -> None:
    assert booted.sh("hostname").strip() == "memu"
    assert "+mDNS" in booted.sh("resolvectl status")
    assert booted.sh("systemctl is-active docker.service systemd-networkd.service "
                     "systemd-resolved.service systemd-timesyncd.service").split() == [
        "active"] * 4
    # no SSH server and no default password in a release build
    assert booted.sh_status("systemctl cat ssh.service sshd.service") != 0
    assert booted.sh("getent shadow root").split(":")[1] in ("!*", "!", "*", "!!")


def test_nothing_changes_the_box_before_it_is_claimed(booted: VM) -> None:
    """A stranger on the LAN, with no credentials or a guessed code, tries what used to be
    open on a fresh box: all refused, the box untouched, the page still served."""
    before = booted.sh("cat /proc/sys/kernel/random/boot_id; "
                       "cat /run/memu/sysupdate.d/*.transfer | sha256sum")
    code = setup_code(booted)
    source = {"action": "source", "channel": "beta", "base_url": "http://203.0.113.9/os/"}
    probes: list[tuple[str, dict[str, Any], dict[str, str], int]] = [
        ("/api/update", source, {}, 401),
        ("/api/update", {"action": "check"}, {}, 401),
        ("/api/factory-reset", {"confirm": "erase all family data"}, {}, 401),
        ("/api/claim", {}, {}, 401),
        ("/api/update", source, {"X-Memu-Setup-Code": "aaaa-bbbb-cccc"}, 403),
        ("/api/factory-reset", {"confirm": "erase all family data"},
         {"X-Memu-Setup-Code": "aaaa-bbbb-cccc"}, 403),
        # even with the right code: not through a stranger's host name or web page
        ("/api/update", source, {**code, "Host": "rebind.example"}, 403),
        ("/api/factory-reset", {"confirm": "erase all family data"},
         {**code, "Origin": "http://attacker.example"}, 403),
    ]
    for path, body, headers, want in probes:
        status, answer = api(booted, "POST", path, body, headers=headers)
        assert status == want, (path, headers, answer)
        assert answer["error"] and answer["hint"]
    assert booted.sh_status("test -e /var/lib/memu/ota/settings.json") != 0
    assert booted.sh_status("test -e /var/lib/memu/factory-reset") != 0
    assert booted.sh("cat /proc/sys/kernel/random/boot_id; "
                     "cat /run/memu/sysupdate.d/*.transfer | sha256sum") == before
    status, page = booted.http_get("/")
    assert status == 200 and "<form" in page
    status, body = booted.http_get("/api/status")
    assert status == 200 and code["X-Memu-Setup-Code"] not in body + page
    assert json.loads(body)["update"]["channel"] == "stable"
