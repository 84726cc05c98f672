"""System facts from a fake host tree: version, uptime, hostname, boot entry, /usr label."""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata
from pathlib import Path

from agent_fixtures import efi_string

from memu_agent.facts import (
    LOADER_GUID,
    HostPaths,
    boot_info,
    hostname,
    loader_entry_selected,
    os_version,
    parse_os_release,
    uptime_s,
    usr_partlabel,
)


def test_parse_os_release_quotes_and_comments() -> None:
    text = "# c\nNAME='Memu OS'\nIMAGE_VERSION=\"0.1.0\"\nID=memu\nBROKEN\nEMPTY=\n"
    assert parse_os_release(text) == {
        "NAME": "Memu OS",
        "IMAGE_VERSION": "0.1.0",
        "ID": "memu",
        "EMPTY": "",
    }


def test_facts_from_fake_host(host: HostPaths) -> None:
    assert os_version(host) == "0.3.1"
    assert uptime_s(host) == 1234.56
    assert hostname(host) == "memu-box"
    assert loader_entry_selected(host) == "memu_0.3.1+2-1.efi"
    # /usr is dm-verity over two partitions: the data one is reported, not the hash one.
    assert usr_partlabel(host) == "memu-os_0.3.1"
    info = boot_info(host)
    assert (info.slot, info.entry, info.usr_partlabel) == (
        None,
        "memu_0.3.1+2-1.efi",
        "memu-os_0.3.1",
    )


def test_os_version_falls_back_to_usr_lib(host: HostPaths) -> None:
    etc, usr = host.os_release
    etc.unlink()
    usr.parent.mkdir(parents=True)
    usr.write_text("IMAGE_VERSION=0.4.0\n")
    assert os_version(host) == "0.4.0"


def test_os_version_falls_back_to_package_version(host: HostPaths) -> None:
    host.os_release[0].write_text("ID=debian\n")
    assert os_version(host) == metadata.version("memu-os")


def test_plain_partition_and_root_fallback(host: HostPaths) -> None:
    (host.proc / "self" / "mountinfo").write_text(
        "22 1 259:3 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p3 rw\n"
    )
    part = host.sys / "dev" / "block" / "259:3"
    part.mkdir(parents=True)
    (part / "uevent").write_text("DEVTYPE=partition\nPARTNAME=memu-os_0.3.1\n")
    assert usr_partlabel(host) == "memu-os_0.3.1"


def test_nothing_known_on_a_bare_host(tmp_path: Path) -> None:
    bare = HostPaths(
        os_release=(tmp_path / "none",),
        proc=tmp_path / "proc",
        sys=tmp_path / "sys",
        efivars=tmp_path / "efivars",
    )
    assert uptime_s(bare) is None
    assert loader_entry_selected(bare) is None
    assert usr_partlabel(bare) is None
    assert hostname(bare)  # falls back to gethostname()


def test_odd_efi_variable(host: HostPaths) -> None:
    var = host.efivars / f"LoaderEntrySelected-{LOADER_GUID}"
    var.write_bytes(b"\x07\x00\x00\x00\xff")  # odd byte count: not UTF-16
    assert loader_entry_selected(host) is None
    var.write_bytes(efi_string(""))
    assert loader_entry_selected(replace(host)) is None
