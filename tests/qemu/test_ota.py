"""A/B updates from a signed release channel, proven on booted images: the happy path into
slot B and back into slot A (the second hop by delta), power cuts while the slot is written
and while a delta is rebuilt, a damaged delta falling back to the full download, and refused
channels (tampered, unsigned, wrongly signed, not newer). The rollback after a failing health
gate is proven with the family stack running (tests/qemu/test_stack.py), where it also has to
put back the stack's images and database.

Versions: 0.1.0 is the image `just build` makes; 0.2.0 and 0.3.0 are test builds of the same
tree with a visible marker file. Each test starts its own VM, restored from the run's golden
snapshot of 0.1.0's first boot on a 16 GiB disk (bigger than the image, as after flashing a
drive; see memu_dev.golden), and serves its own channel on the host's loopback. Reboots and
power cuts after that are real boots.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ota_support import (
    REPO,
    Channel,
    api,
    boot_entries,
    channel,
    ensure_build,
    install_and_wait_ready,
    labels,
    point_at,
    reboot_into,
    restored_vm,
    step,
    update,
    wait_blessed,
    wait_update,
    wait_version,
)

from memu_common import container_lock as lock
from memu_dev.containers import TREE
from memu_dev.golden import Golden
from memu_dev.registry import Registry, serve
from memu_dev.variant import with_pulled_images
from memu_dev.vm import VM

SLOT_A, SLOT_B = (2, 3, 4), (5, 6, 7)  # verity-sig, verity, usr partition numbers
GIB = 1 << 30


#: Fixed: 0.2.0's Docker trusts this plain-HTTP registry (tests/qemu/trees/test-registry).
REGISTRY_PORT = 5123


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    """A registry on the host's loopback (the guest's 10.0.2.2:5123) for the module."""
    with serve(REPO / "test-results" / "registry", port=REGISTRY_PORT) as reg:
        yield reg


@pytest.fixture(scope="module")
def test_versions(built_image: Path, registry: Registry) -> dict[str, lock.LockEntry]:
    """Build the other versions the update tests offer, before any VM boots (a build next to
    a running VM slows both). Each is skipped when already built and up to date. 0.2.0's lock
    also names two images to pull from the host's registry: the built nginx image pushed
    there (its digest), and one by a digest the registry does not have. Returns those two."""
    nginx = next(e for e in lock.read(TREE) if e.name == "nginx")
    digest = registry.push(TREE / nginx.archive, "standin/photos:v1")
    guest = f"10.0.2.2:{REGISTRY_PORT}/standin/photos"
    pulled = {name: lock.to_pull(name, f"{guest}:v1", f"{guest}@{pin}", "linux/amd64")
              for name, pin in (("photos", digest), ("llm", "sha256:" + "0" * 64))}
    tree = REPO / "test-results" / "trees" / "pull-0.2.0"
    with_pulled_images(TREE, tree, list(pulled.values()))
    ensure_build("0.2.0", "v-marker", "test-registry", tree)
    ensure_build("0.3.0", "v-marker")
    return pulled


@pytest.fixture
def v1_vm(golden: Golden, test_versions: dict[str, lock.LockEntry],
          request: pytest.FixtureRequest) -> Iterator[VM]:
    """A VM of version 0.1.0 on a 16 GiB disk, restored from the golden first boot."""
    with restored_vm(golden, request.node.name) as vm:
        yield vm


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Channel]:
    with channel(tmp_path / "channels") as ch:
        yield ch


def _wait_pulled(vm: VM, names: set[str], timeout: float = 420) -> dict[str, Any]:
    """``stack.images`` of /api/status once the pull has tried every image in ``names``."""
    deadline = time.monotonic() + timeout
    images: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, st = api(vm, "GET", "/api/status")
        images = st["stack"]["images"]
        if all(images.get(n, {}).get("state") in ("pulled", "present", "failed")
               for n in names):
            return dict(images)
        time.sleep(5)
    raise AssertionError(f"the pull did not finish in {timeout} s: {images}")


def test_update_to_slot_b_and_back_to_a_keeps_data(
        v1_vm: VM, served: Channel, test_versions: dict[str, lock.LockEntry]) -> None:
    vm = v1_vm
    # First boot on a disk larger than the image: root takes the rest, slots stay equal.
    sizes = {str(n): vm.sh(f"blockdev --getsize64 {vm.part(n)}").strip() for n in (4, 7, 8)}
    assert int(sizes["4"]) == int(sizes["7"]) == 2 * GIB
    assert int(sizes["8"]) > 10 * GIB
    vm.sh("mkdir -p /var/lib/memu-test && echo keep-me > /var/lib/memu-test/canary")
    wait_blessed(vm, "0.1.0")

    served.add("0.2.0")
    point_at(vm, served)
    with step("check"):
        status, snap = update(vm, "check")
        assert status == 202, snap
        snap = wait_update(vm, {"idle", "failed"}, timeout=300)
    assert snap["available"] == "0.2.0", snap
    progress = install_and_wait_ready(vm, "0.2.0")
    assert any(0 < p < 100 for p in progress), progress
    assert [labels(vm)[n] for n in SLOT_B] == [
        "memu-os_0.2.0_verity_sig", "memu-os_0.2.0_verity", "memu-os_0.2.0"]

    st = reboot_into(vm, "0.2.0")
    assert st["boot"] == {"slot": "b", "entry": st["boot"]["entry"],
                          "usr_partlabel": "memu-os_0.2.0"}
    assert vm.sh("cat /usr/share/memu/test-marker").strip() == "test build with a visible change"
    # 0.2.0's lock names two images its slot does not carry: pulled by digest from the host's
    # registry on boot, the wrong digest refused by name.
    with step("pull by digest from the host's registry"):
        images = _wait_pulled(vm, set(test_versions))
    assert images["photos"]["state"] in ("pulled", "present"), images
    assert images["llm"]["state"] == "failed", images
    assert "manifest unknown" in images["llm"]["error"].lower(), images
    photos = test_versions["photos"].origin
    assert vm.sh(f"docker image inspect --format '{{{{.Id}}}}' {photos}").strip() == next(
        e.image_id for e in lock.read(TREE) if e.name == "nginx")
    assert vm.sh("cat /var/lib/memu-test/canary").strip() == "keep-me"
    wait_blessed(vm, "0.2.0")
    _, st = api(vm, "GET", "/api/status")
    assert st["update"]["last_result"] == "updated from 0.1.0 to 0.2.0", st["update"]

    # The second hop goes by delta: the channel carries 0.3.0's delta material, the box
    # rebuilds slot A's artifacts from the running slot B and the changed blocks.
    served.add("0.3.0", delta=True)
    with step("delta update to 0.3.0"):
        install_and_wait_ready(vm, "0.3.0")
    _, st = api(vm, "GET", "/api/status")
    cost = st["update"]["delta"]
    assert cost and cost["version"] == "0.3.0", st["update"]  # not the full download
    full = sum(p.stat().st_size for p in served.dir.glob("memu-os_0.3.0_x86-64*")
               if p.name.endswith((".raw.gz", ".efi")))
    print(f"delta 0.2.0 -> 0.3.0: {cost['fetched']} bytes fetched, the full update is {full} "
          f"({cost['fetched'] / full:.2%})")
    assert cost["fetched"] < 0.05 * full, cost
    assert vm.sh("ls /var/lib/memu/ota/delta 2>/dev/null | wc -l").strip() == "0"
    assert [labels(vm)[n] for n in SLOT_A][2] == "memu-os_0.3.0"
    st = reboot_into(vm, "0.3.0")
    assert st["boot"]["slot"] == "a"
    assert vm.sh("cat /var/lib/memu-test/canary").strip() == "keep-me"


def _cut_and_boot_old(vm: VM, when: str) -> None:
    """Pull the plug, boot again and check that 0.1.0 runs with slot B untouched and no boot
    entry for 0.2.0: the power cut left nothing half-written in use."""
    vm.power_cut()
    with step(f"boot after a power cut {when}"):
        vm.start()
        st = wait_version(vm, "0.1.0", timeout=420)
        vm.wait_for_shell(240)
    assert "interrupted" in str(st["update"]["last_result"]), (when, st)
    assert [labels(vm)[n] for n in SLOT_B] == ["_empty"] * 3, when
    assert not any(e.startswith("memu-os_0.2.0") for e in boot_entries(vm)), when


def _install_until(vm: VM, progress: int) -> dict[str, Any]:
    """Start installing 0.2.0; return the first snapshot at ``progress`` % or more."""
    status, snap = update(vm, "install", version="0.2.0")
    assert status == 202, snap
    snap = wait_update(vm, {"downloading"}, timeout=300)
    while int(snap.get("progress") or 0) < progress:
        snap = wait_update(vm, {"downloading", "ready", "failed"}, timeout=600)
        assert snap["state"] == "downloading", f"finished before the cut: {snap}"
    return snap


def test_power_cut_while_writing_slot_keeps_old_version(
        v1_vm: VM, served: Channel, tmp_path: Path) -> None:
    """Power cuts at every stage of an update (the full download, a delta's rebuild, the
    delta's install) leave 0.1.0 running; a damaged delta falls back to the full download;
    the last retry resumes the delta and installs."""
    vm = v1_vm
    served.add("0.2.0", delta=True)
    point_at(vm, served)
    # A block of the delta material changed on the server (a broken mirror): the box
    # notices it against the signed index and downloads the update whole. The verity
    # signature's first block holds 0.2.0's root hash, so it is always fetched.
    sig = next(served.dir.glob("memu-os_0.2.0_x86-64.usr-verity-sig.*.img"))
    pristine = tmp_path / sig.name
    shutil.copyfile(sig, pristine)
    data = bytearray(sig.read_bytes())
    data[100] ^= 0xFF
    sig.write_bytes(bytes(data))
    # sysupdate's progress runs over its four transfers in order (usr-verity-sig, usr-verity,
    # usr, UKI: a quarter each), so 30 % cuts while the slot is being written (its verity
    # partition).
    with step("damaged delta, full download to 30 %"):
        snap = _install_until(vm, 30)
    assert snap["delta"]["version"] == "0.2.0", snap
    assert "does not match the index" in snap["delta"]["fallback"], snap
    _cut_and_boot_old(vm, "at 30 % of the full download")

    shutil.copyfile(pristine, sig)
    # The delta's rebuild of /usr, 64 MiB into its 0.5 GB: cut.
    status, snap = update(vm, "install", version="0.2.0")
    assert status == 202, snap
    partial = "/var/lib/memu/ota/delta/memu-os_0.2.0_x86-64.usr.*.img.partial"
    with step("delta rebuild of /usr to 64 MiB"):
        vm.sh(f"timeout 600 sh -c 'until [ $(stat -c %s {partial} 2>/dev/null || echo 0) "
              f"-gt 67108864 ]; do sleep 1; done'", timeout=630)
    _cut_and_boot_old(vm, "while the delta rebuilt /usr")

    # The retry resumes the rebuild; 85 % of its install is right after the slot is
    # written, before the boot entry (the UKI) is complete.
    with step("delta resumed, install to 85 %"):
        _install_until(vm, 85)
    _cut_and_boot_old(vm, "at 85 % of the delta's install")

    # A retry succeeds, by delta, from the artifacts the earlier tries rebuilt.
    install_and_wait_ready(vm, "0.2.0")
    _, st = api(vm, "GET", "/api/status")
    assert "fetched" in (st["update"]["delta"] or {}), st["update"]
    assert st["update"]["delta"]["fetched"] < 1 << 20, st["update"]  # nothing left to fetch
    assert labels(vm)[7] == "memu-os_0.2.0"
    assert vm.sh("ls /var/lib/memu/ota/delta 2>/dev/null | wc -l").strip() == "0"


def _resign_with_stranger(sums: Path, home: Path) -> None:
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
                    "--passphrase", "", "--quick-gen-key", "Stranger <x@invalid>", "ed25519",
                    "sign", "never"], check=True, capture_output=True)
    subprocess.run(["gpg", "--homedir", home, "--batch", "--yes", "--detach-sign",
                    "--output", sums.with_name("SHA256SUMS.gpg"), sums], check=True,
                   capture_output=True)


def test_bad_channels_are_refused_and_running_slot_untouched(
        v1_vm: VM, served: Channel, tmp_path: Path) -> None:
    vm = v1_vm
    served.add("0.2.0")
    point_at(vm, served)
    pristine = tmp_path / "pristine"
    shutil.copytree(served.dir, pristine)
    before = labels(vm)

    def refused(what: str) -> str:
        with step(f"refused: {what}"):
            status, snap = update(vm, "install", version="0.2.0")
            if status == 202:
                snap = wait_update(vm, {"ready", "failed"}, timeout=900)
        assert snap.get("state") != "ready", f"{what}: installed anyway: {snap}"
        assert labels(vm) == before, what
        assert not any(e.startswith("memu-os_0.2.0") for e in boot_entries(vm)), what
        return str(snap.get("message") or snap.get("error") or snap)

    # A byte changed in an artifact after signing: its checksum no longer matches. The
    # first transfer's (the verity signature), so the refusal comes before the slot is
    # written (every artifact is checked the same way, against the signed SHA256SUMS).
    sig = next(served.dir.glob("memu-os_0.2.0_x86-64.usr-verity-sig.*.raw.gz"))
    data = bytearray(sig.read_bytes())
    data[len(data) // 2] ^= 0xFF
    sig.write_bytes(bytes(data))
    assert re.search(r"checksum|tamper", refused("tampered verity signature"), re.I)

    # The /usr artifact cut in half: it cannot be unpacked (or does not match).
    shutil.rmtree(served.dir)
    shutil.copytree(pristine, served.dir)
    usr = next(served.dir.glob("memu-os_0.2.0_x86-64.usr.*.raw.gz"))
    with usr.open("r+b") as f:
        f.truncate(usr.stat().st_size // 2)
    assert re.search(r"truncated|damaged|checksum", refused("truncated /usr"), re.I)

    shutil.rmtree(served.dir)
    shutil.copytree(pristine, served.dir)
    (served.dir / "SHA256SUMS.gpg").unlink()
    assert re.search(r"sign", refused("unsigned"), re.I)

    _resign_with_stranger(served.dir / "SHA256SUMS", tmp_path / "stranger")
    assert re.search(r"sign|key", refused("unknown key"), re.I)

    status, snap = update(vm, "install", version="0.1.0")
    assert status == 409 and "newer" in str(snap).lower(), snap
    # That a good install still succeeds after a refused one (slot B partly written, its
    # labels untouched) is the power-cut test's retry: the same state, one install less here.
