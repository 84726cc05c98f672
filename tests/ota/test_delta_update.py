"""The updater installs by delta when the channel offers it and downloads the whole update
when it does not (memu_ota.delta_update), against a real HTTP server and a fake sysupdate
replaying a real run."""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from ota_fixtures import Server, calls, publish, set_scenario

from memu_ota import delta, delta_update
from memu_ota.blockindex import BLOCK, BlockIndex
from memu_ota.config import OtaConfig
from memu_ota.updater import Updater

STEM = "memu-os_0.2.0_x86-64"
STABLE = {"list": "list-stable", "list 0.2.0": "list-version-available", "update": "update-ok"}


def _channel(root: Path, running_uki: bytes, signer: Path, *, with_delta: bool) -> int:
    """Publish 0.2.0 into ``root/stable``: a slot of 40 new blocks and a UKI that shares
    all but its last block with the running one; return the UKI's size."""
    uki = running_uki[:-BLOCK] + b"the new command line"
    files = {f"{STEM}.usr.0123.raw.gz": b"gzip", f"{STEM}.efi": uki}
    if with_delta:
        slot = random.Random(2).randbytes(40 * BLOCK)
        for name, data in ((f"{STEM}.usr.0123.img", slot), (f"{STEM}.efi", uki)):
            (root / "index-of").write_bytes(data)
            files[name] = data
            files[delta.index_name(name)] = BlockIndex.of_file(root / "index-of").to_bytes()
    publish(root / "stable", files, signer)
    return len(uki)


async def _install(config: OtaConfig) -> Updater:
    set_scenario(config.sysupdate.parent, STABLE)
    updater = Updater(config, running="0.1.0", boot_id="boot-1",
                      reboot_command=(sys.executable, "-c", "pass"))
    await updater.start(periodic=False)
    updater.request_install()
    for _ in range(1000):
        if not updater.busy():
            break
        await asyncio.sleep(0.01)
    await updater.stop()
    return updater


@pytest.mark.parametrize("with_delta", [True, False])
async def test_an_update_is_installed_by_delta_when_the_channel_offers_it(
        ota_config: OtaConfig, tmp_path: Path, keys: dict[str, Path], with_delta: bool
) -> None:
    running_uki = random.Random(1).randbytes(20 * BLOCK)
    (ota_config.esp_dirs[0] / "memu-os_0.1.0.efi").write_bytes(running_uki)
    uki_size = _channel(tmp_path, running_uki, keys["release"], with_delta=with_delta)
    with Server(tmp_path / "stable") as server:
        config = replace(ota_config, base_url=server.url + "/", delta=True,
                         keyring=keys["keyring"])
        updater = await _install(config)
    snap = updater.snapshot()
    assert snap["state"] == "ready", snap["message"]
    [update] = [c for c in calls(config.sysupdate.parent) if " update 0.2.0" in c]
    local = config.runtime_dir / "sysupdate-delta.d"
    if with_delta:
        assert f"--definitions={local}" in update
        assert f"Path=file://{delta_update.workdir(config)}/" in (
            local / "10-usr.transfer").read_text()
        assert snap["delta"]["version"] == "0.2.0"
        assert snap["delta"]["size"] == 40 * BLOCK + uki_size
        # the slot's 40 blocks and the UKI's new 20-byte tail, plus sums, signature and
        # indexes (under 3 KiB)
        assert 40 * BLOCK + 20 < snap["delta"]["fetched"] < 40 * BLOCK + 20 + 3072
        assert snap["delta"]["memory"] > 1 << 20  # the rebuild's peak resident set, bytes
    else:
        assert f"--definitions={config.definitions_dir}" in update
        assert snap["delta"] == {
            "version": "0.2.0", "fallback": f"the channel has no delta material for "
                                            f"{STEM}.usr.0123.img, {STEM}.efi"}, snap["delta"]
    assert not delta_update.workdir(config).exists()  # nothing left on /var
