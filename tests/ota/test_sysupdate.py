"""sysupdate output, notify datagrams and failures, from real captured runs."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from ota_fixtures import fixture, set_scenario

from memu_common.notify import NotifyListener, parse_notify
from memu_common.run import Completed
from memu_ota.config import OtaConfig
from memu_ota.sysupdate import (
    Progress,
    Sysupdate,
    SysupdateError,
    explain,
    failed,
    parse_listing,
    parse_progress,
    parse_version_info,
)


def completed(name: str) -> Completed:
    run = fixture(name)
    return Completed(argv=run["argv"], returncode=run["returncode"], stdout=run["stdout"],
                     stderr=run["stderr"],
                     notify=[parse_notify(d.encode()) for d in run["notify"]])


def test_parse_listings() -> None:
    listing = parse_listing(fixture("list-beta")["stdout"])
    assert listing.current == "0.1.0"
    assert listing.versions == ("1.10.0", "1.9.0", "0.2.0", "0.1.0")
    assert parse_listing(fixture("list-incomplete")["stdout"]).versions == ("0.1.0",)
    assert parse_listing(fixture("list-after-update")["stdout"]).current == "0.2.0"


def test_parse_version_info() -> None:
    info = parse_version_info(fixture("list-version-available")["stdout"])
    assert (info.version, info.available, info.installed, info.incomplete) == (
        "0.2.0", True, False, False)
    current = parse_version_info(fixture("list-version-current")["stdout"])
    assert current.installed and current.protected


@pytest.mark.parametrize("bad", ["", "[]", '{"all": "x"}', '{"current": 1, "all": []}'])
def test_parse_listing_rejects_odd_output(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_listing(bad)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("update-tampered", "checksum"),
        ("update-truncated", "checksum"),
        ("check-new-badsig", "signature-invalid"),
        ("check-new-unknownkey", "signature-key-unknown"),
        ("check-new-unsigned", "unsigned"),
        ("check-new-no-channel", "channel-missing"),
        ("update-missing-file", "file-missing"),
        ("check-new-server-down", "network"),
        ("list-empty", None),
        ("update-no-space", "no-space"),
        ("update-oversized", "oversized"),
        ("update-version-unknown", "version-unknown"),
        ("update-incomplete-version", "version-unknown"),
    ],
)
def test_failures_are_explained(name: str, reason: str | None) -> None:
    result = completed(name)
    if reason is None:
        assert not failed(result)
        return
    assert failed(result)
    error = explain(result, "it failed")
    assert error.reason == reason
    assert error.hint and error.message.startswith("it failed: ")
    assert error.detail and error.detail in result.stderr.strip()


def test_check_new_nothing_is_not_a_failure() -> None:
    for name in ("check-new-none", "check-new-empty", "check-new-older-channel"):
        assert not failed(completed(name))


def test_unknown_failure_keeps_last_line() -> None:
    result = Completed(["x"], 1, "", "Something odd happened.\n", [{"ERRNO": "5"}])
    error = explain(result, "update failed")
    assert error.reason == "other" and "Something odd happened." in error.message


def test_damaged_compressed_download_is_explained() -> None:
    """Seen in the QEMU tamper test: a flipped byte in an .xz artifact fails unpacking (before
    the checksum is compared), which sysupdate reports as an I/O error of its pull child."""
    stderr = ("Pulling 'http://10.0.2.2/stable/memu-os_0.2.0_x86-64.usr.x.raw.xz'\n"
              "(sd-pull-raw) failed with exit status 1: Input/output error\n")
    error = explain(Completed(["x"], 1, "", stderr, [{"ERRNO": "5"}]), "update failed")
    assert error.reason == "damaged" and "tampered" in error.message
    full = "Failed to write file: Input/output error\n" + stderr
    assert explain(Completed(["x"], 1, "", full, []), "update failed").reason == "no-space"


def test_progress_from_real_datagrams() -> None:
    progress = [parse_progress(parse_notify(d.encode())) for d in fixture("update-ok")["notify"]]
    percents = [p.percent for p in progress if p is not None and p.percent is not None]
    assert percents == sorted(percents) and percents[-1] <= 100 and len(percents) >= 3
    first = progress[0]
    assert first is not None and first.version == "0.2.0"
    assert parse_progress({"EXIT_STATUS": "0"}) is None
    assert parse_progress({"X_SYSUPDATE_PROGRESS": "250"}) == Progress(100, None, None)


async def test_notify_listener_over_a_real_socket(tmp_path: Path) -> None:
    got: list[dict[str, str]] = []
    datagrams = fixture("update-ok")["notify"]
    async with NotifyListener(tmp_path, got.append) as listener:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d.encode(), listener.address)
        await asyncio.sleep(0.05)
    assert got == [parse_notify(d.encode()) for d in datagrams]
    assert got[0]["X_SYSUPDATE_VERSION"] == "0.2.0"
    assert not any(p.is_socket() for p in tmp_path.glob("*"))  # noqa: ASYNC240 - socket removed


async def test_listener_falls_back_to_abstract_for_long_paths(tmp_path: Path) -> None:
    got: list[dict[str, str]] = []
    deep = tmp_path / ("x" * 100)
    async with NotifyListener(deep, got.append) as listener:
        assert listener.address.startswith("@")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"X_SYSUPDATE_PROGRESS=7", "\0" + listener.address[1:])
        await asyncio.sleep(0.05)
    assert got == [{"X_SYSUPDATE_PROGRESS": "7"}]


async def test_driver_against_fake(ota_config: OtaConfig) -> None:
    bin_dir = ota_config.sysupdate.parent
    set_scenario(bin_dir, {"list": "list-beta", "list 1.10.0": "list-version-available",
                           "update": "update-ok"})
    driver = Sysupdate(ota_config)
    assert (await driver.list_versions()).versions[0] == "1.10.0"
    assert (await driver.version_info("1.10.0")).available
    seen: list[Progress] = []
    await driver.update("0.2.0", seen.append)
    assert [p.percent for p in seen if p.percent is not None][-1] >= 52
    set_scenario(bin_dir, {"update": "update-tampered"})
    with pytest.raises(SysupdateError, match="tampered or truncated") as e:
        await driver.update("0.2.0", seen.append)
    assert e.value.reason == "checksum"


def test_isolated_argv_uses_systemd_run(ota_config: OtaConfig) -> None:
    from dataclasses import replace

    argv = Sysupdate(replace(ota_config, isolate=True)).argv("update", "0.2.0")
    assert argv[:2] == ["systemd-run", "--unit=memu-sysupdate"]
    assert "--wait" in argv and "--pipe" in argv and "--collect" in argv
    assert "--setenv=NOTIFY_SOCKET=@NOTIFY_SOCKET@" in argv
    tail = argv[argv.index("--") + 1:]
    assert tail == [str(ota_config.sysupdate), "--no-pager",
                    f"--definitions={ota_config.definitions_dir}", "update", "0.2.0"]
