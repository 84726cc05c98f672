"""The updater end to end against a fake systemd-sysupdate replaying real runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from ota_fixtures import calls, set_scenario

from memu_ota.config import OtaConfig
from memu_ota.state import PendingPhase, load_state
from memu_ota.updater import Phase, UpdateBusy, UpdateInvalid, Updater, UpdateRefused

STABLE = {"list": "list-stable", "list 0.2.0": "list-version-available", "update": "update-ok"}


async def settle(updater: Updater) -> None:
    for _ in range(500):
        if not updater.busy():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("updater did not finish")


def make(config: OtaConfig, scenario: dict[str, object], running: str = "0.1.0",
         lines: list[str] | None = None, boot_id: str = "boot-1") -> Updater:
    set_scenario(config.sysupdate.parent, scenario)
    return Updater(config, running=running, boot_id=boot_id,
                   on_status=(lines.append if lines is not None else None),
                   reboot_command=(sys.executable, "-c", "pass"))


async def install_and_reboot(config: OtaConfig) -> None:
    """0.1.0 installs 0.2.0 from the stable channel and asks for the reboot into it."""
    updater = make(config, STABLE)
    await updater.start(periodic=False)
    updater.request_install()
    await settle(updater)
    updater.reboot()
    await asyncio.sleep(0.01)
    await settle(updater)


async def test_check_then_install_then_reboot(ota_config: OtaConfig) -> None:
    lines: list[str] = []
    updater = make(ota_config, STABLE, lines=lines)
    await updater.start(periodic=False)
    assert (ota_config.definitions_dir / "10-usr.transfer").exists()
    updater.request_check()
    assert updater.snapshot()["state"] == "checking"
    await settle(updater)
    snap = updater.snapshot()
    assert (snap["state"], snap["available"]) == ("idle", "0.2.0")
    assert snap["last_check"]["result"] == "0.2.0 is available"

    updater.request_install()
    await settle(updater)
    snap = updater.snapshot()
    assert snap["state"] == "ready" and snap["target"] == "0.2.0"
    assert "update: downloading 0.2.0 (40%)" in lines and lines[-1] == "update: ready 0.2.0"
    assert "update 0.2.0" in " ".join(calls(ota_config.sysupdate.parent))
    pending = load_state(ota_config.state_dir).pending
    assert pending is not None and pending.phase is PendingPhase.WRITTEN

    with pytest.raises(UpdateRefused, match="waits for a restart"):
        updater.request_install()
    updater.reboot()
    await asyncio.sleep(0.01)
    assert updater.phase is Phase.REBOOTING
    await settle(updater)
    pending = load_state(ota_config.state_dir).pending
    assert pending is not None and pending.phase is PendingPhase.REBOOTING
    await updater.stop()


async def test_failed_download_is_explained_and_forgotten(ota_config: OtaConfig) -> None:
    updater = make(ota_config, {**STABLE, "update": "update-tampered"})
    await updater.start(periodic=False)
    updater.request_install("0.2.0")
    await settle(updater)
    snap = updater.snapshot()
    assert snap["state"] == "failed"
    assert "tampered or truncated" in snap["message"]
    assert "update to 0.2.0 failed" in snap["last_result"]
    assert load_state(ota_config.state_dir).pending is None


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ({"list": "check-new-badsig"}, "signature is not valid"),
        ({"list": "check-new-unknownkey"}, "does not trust"),
        ({"list": "check-new-server-down"}, "could not download"),
    ],
)
async def test_check_failures(ota_config: OtaConfig, scenario: dict[str, str],
                              message: str) -> None:
    updater = make(ota_config, scenario)
    await updater.start(periodic=False)
    updater.request_check()
    await settle(updater)
    assert updater.phase is Phase.FAILED and message in str(updater.message)
    assert load_state(ota_config.state_dir).last_check is not None


async def test_refusals(ota_config: OtaConfig) -> None:
    updater = make(ota_config, {"list": "list-incomplete", "delay_s": 0.3}, running="0.1.0")
    await updater.start(periodic=False)
    with pytest.raises(UpdateRefused, match="not newer"):
        updater.request_install("0.1.0")
    with pytest.raises(UpdateRefused, match="not newer"):
        updater.request_install("0.0.9")
    updater.request_install()
    with pytest.raises(UpdateBusy):
        updater.request_check()
    with pytest.raises(UpdateBusy):
        updater.set_source("beta", None)
    await settle(updater)
    assert updater.phase is Phase.FAILED
    assert "offers no complete version newer than 0.1.0" in str(updater.message)
    with pytest.raises(UpdateRefused, match="no installed update"):
        updater.reboot()


async def test_blocked_version_is_skipped_but_newer_offered(ota_config: OtaConfig) -> None:
    from memu_ota.state import OtaState, save_state

    save_state(ota_config.state_dir, OtaState(blocked=("1.10.0",)))
    updater = make(ota_config, {"list": "list-beta", "list 1.9.0": "list-version-available"})
    await updater.start(periodic=False)
    with pytest.raises(UpdateRefused, match="rolled back"):
        updater.request_install("1.10.0")
    updater.request_check()
    await settle(updater)
    assert updater.available == "1.9.0"  # newest that is not blocked


async def test_rollback_reported_at_start(ota_config: OtaConfig) -> None:
    await install_and_reboot(ota_config)
    (ota_config.esp_dirs[0] / "memu-os_0.2.0+0-3.efi").touch()
    (ota_config.esp_dirs[0] / "memu-os_0.1.0.efi").touch()
    again = make(ota_config, STABLE)  # the old version booted again
    await again.start(periodic=False)
    snap = again.snapshot()
    assert snap["last_result"] == ("rolled back from 0.2.0 to 0.1.0, because it did not "
                                   "finish booting on any of its tries")
    assert snap["blocked"] == ["0.2.0"] and snap["state"] == "idle"


async def test_a_restart_that_did_not_start_the_update_leaves_it_waiting(
        ota_config: OtaConfig) -> None:
    """The box came back on the old version with the new one still untried (a boot chain
    that tries only when asked, whose request did not reach the firmware): the update is
    ready for another restart, not lost and not called rolled back."""
    await install_and_reboot(ota_config)
    (ota_config.esp_dirs[0] / "memu-os_0.2.0+3.efi").touch()
    (ota_config.esp_dirs[0] / "memu-os_0.1.0.efi").touch()
    again = make(ota_config, STABLE, boot_id="boot-2")
    await again.start(periodic=False)
    snap = again.snapshot()
    assert (snap["state"], again.target, snap["last_result"]) == ("ready", "0.2.0", None)
    again.reboot()  # asking again is allowed
    await asyncio.sleep(0.01)
    await settle(again)
    assert again.phase is Phase.REBOOTING


async def test_source_change_rerenders(ota_config: OtaConfig) -> None:
    updater = make(ota_config, STABLE)
    await updater.start(periodic=False)
    updater.set_source("beta", "https://mirror.example/memu/")
    text = (ota_config.definitions_dir / "10-usr.transfer").read_text()
    assert "Path=https://mirror.example/memu/beta/" in text
    with pytest.raises(UpdateInvalid):
        updater.set_source("nightly", None)
    again = make(ota_config, STABLE)
    await again.start(periodic=False)
    assert again.snapshot()["channel"] == "beta"


async def test_scheduled_reboot_and_periodic_check(ota_config: OtaConfig) -> None:
    config = replace(ota_config, check_interval_s=0.05)
    updater = make(config, STABLE)
    await updater.start(periodic=False)
    updater.request_install()
    await settle(updater)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    updater.reboot(later)
    assert updater.phase is Phase.READY and updater.snapshot()["reboot_at"]
    with pytest.raises(UpdateRefused, match="past"):
        updater.reboot(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    await updater.stop()


async def test_missing_templates_mean_failed_not_crash(ota_config: OtaConfig,
                                                      tmp_path: Path) -> None:
    updater = make(replace(ota_config, template_dir=tmp_path / "none"), STABLE)
    await updater.start(periodic=False)
    assert updater.phase is Phase.FAILED and "no update definitions" in str(updater.message)


async def test_update_reported_as_soon_as_blessed(ota_config: OtaConfig) -> None:
    """On the new version, "updated" shows once systemd-bless-boot renamed the entry, without
    waiting for the next periodic check."""
    await install_and_reboot(ota_config)
    counting = ota_config.esp_dirs[0] / "memu-os_0.2.0+2-1.efi"
    counting.touch()
    new = make(ota_config, STABLE, running="0.2.0")  # booted the new version
    await new.start(periodic=False)
    assert new.snapshot()["last_result"] is None  # health gate not passed yet
    counting.rename(ota_config.esp_dirs[0] / "memu-os_0.2.0.efi")
    assert new.snapshot()["last_result"] == "updated from 0.1.0 to 0.2.0"
