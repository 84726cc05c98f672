"""Fixtures for the agent tests: a real sd_notify socket and a fake host tree."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fixtures import NotifySocket, bind_notify_socket, efi_string

from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_ota.boot import Firmware
from memu_ota.boot.systemd_boot import LOADER_GUID
from memu_ota.config import OtaConfig


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    """A notify socket, once as a filesystem path and once in the abstract namespace."""
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        ns = bind_notify_socket(path, path)
    else:
        name = f"memu-test-{uuid.uuid4().hex}"
        ns = bind_notify_socket("@" + name, "\0" + name)
    yield ns
    ns.sock.close()


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    """A config that listens on a free loopback port and writes only under tmp_path."""
    return AgentConfig(
        host="127.0.0.1",
        port=0,
        device_name="Okafor box",
        state_dir=tmp_path / "state",
        issue_dir=tmp_path / "issue.d",
        ota=OtaConfig(
            isolate=False,
            sysupdate=tmp_path / "no-sysupdate",
            template_dir=tmp_path / "templates",
            runtime_dir=tmp_path / "run",
            state_dir=tmp_path / "state" / "ota",
            esp_dirs=(tmp_path / "esp",),
            os_release=(tmp_path / "os-release",),  # none: the plain image
        ),
    )


@pytest.fixture
def host(tmp_path: Path) -> HostPaths:
    """A fake host: os-release with IMAGE_VERSION, /proc, /sys with a dm-verity /usr, efivars,
    the image preload's status file."""
    root = tmp_path / "host"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "os-release").write_text(
        'NAME="Memu OS"\nID=memu\n# a comment\nIMAGE_ID=memu-os\nIMAGE_VERSION="0.3.1"\n'
    )
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "uptime").write_text("1234.56 4000.00\n")
    (proc / "sys" / "kernel" / "hostname").write_text("memu-box\n")
    (proc / "self" / "mountinfo").write_text(
        "22 1 259:3 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p3 rw\n"
        "23 22 253:0 / /usr ro,relatime shared:2 - erofs /dev/mapper/usr ro\n"
    )
    sys_ = root / "sys"
    dm = sys_ / "dev" / "block" / "253:0"
    (dm / "slaves").mkdir(parents=True)
    (dm / "uevent").write_text("MAJOR=253\nMINOR=0\nDEVNAME=dm-0\nDEVTYPE=disk\n")
    for name, label in (("nvme0n1p5", "memu-os_0.3.1_verity"), ("nvme0n1p4", "memu-os_0.3.1")):
        part = sys_ / "class" / "block" / name
        part.mkdir(parents=True)
        (part / "uevent").write_text(f"DEVTYPE=partition\nDEVNAME={name}\nPARTNAME={label}\n")
        os.symlink(part, dm / "slaves" / name)
    efivars = sys_ / "firmware" / "efi" / "efivars"
    efivars.mkdir(parents=True)
    (efivars / f"LoaderEntrySelected-{LOADER_GUID}").write_bytes(efi_string("memu_0.3.1+2-1.efi"))
    preload = root / "run" / "memu-stack" / "preload.json"
    preload.parent.mkdir(parents=True)
    preload.write_text('{"version": "0.3.1", "state": "done", "seconds": 40.5, '
                       '"images": {"postgres": {"state": "loaded", "seconds": 12.5}}}')
    return HostPaths(
        os_release=(etc / "os-release", root / "usr" / "lib" / "os-release"),
        proc=proc,
        sys=sys_,
        firmware=Firmware(efivars=efivars),
        dev=root / "dev",
        preload_status=preload,
        pull_status=preload.with_name("pull.json"),  # the pull has not run
        docker_socket=root / "run" / "docker.sock",  # nothing listens
        data=root,
        stack_config=etc / "memu" / "stack",  # not set up
    )
