"""The OS image carries the stack's container images and loads them at boot with no network:
every archive of the lock file under /usr/share/memu/containers, each loaded by
memu-stack-preload.service during the golden first boot with the image ID its lock entry
records, reported in ``/api/status``; and the loaded bot image runs (``--version``, as the
non-root user, configured by environment and a mounted secret file, health check wired).

No network is needed: every ``docker run`` uses ``--network none``. The preload's own cost is
paid once per run, in the golden boot; its per-image seconds are printed.
"""

from __future__ import annotations

import json
import re

import pytest

from memu_common import container_lock as lock
from memu_dev.vm import VM

DIR = "/usr/share/memu/containers"
STACK = {"intelligence", "postgres", "valkey", "nginx", "synapse"}
#: Registry images: no registry is reachable from the build host, so none is in the slot.
PULLED = {"element", "tailscale", "immich-server", "immich-ml", "ollama"}


@pytest.fixture(scope="module")
def lock_entries(booted: VM) -> dict[str, lock.LockEntry]:
    """The guest's lock file (which must parse), by image name."""
    return {e.name: e for e in lock.loads(booted.sh(f"cat {DIR}/{lock.LOCK_NAME}"))}


@pytest.fixture(scope="module")
def entries(lock_entries: dict[str, lock.LockEntry],
            os_version: str) -> dict[str, lock.LockEntry]:
    """The images the slot carries, by name: every image built here."""
    assert set(lock_entries) == STACK | PULLED
    built = {k: e for k, e in lock_entries.items() if e.in_slot}
    assert set(built) == STACK
    for e in built.values():
        assert e.ref == f"memu/{e.name}:{os_version}"
        assert e.source == "built" and e.platform == "linux/amd64"
    return built


@pytest.fixture(scope="module")
def bot(entries: dict[str, lock.LockEntry]) -> lock.LockEntry:
    return entries["intelligence"]


def test_lock_file_and_archives_are_in_usr(booted: VM,
                                           entries: dict[str, lock.LockEntry]) -> None:
    listing = booted.sh(f"ls {DIR}").split()
    assert sorted(listing) == sorted([lock.LOCK_NAME, *(e.archive for e in entries.values())])
    sizes = booted.sh(f"cd {DIR} && stat -c '%n %s' *.tar").splitlines()
    assert dict(line.split() for line in sizes) == {
        e.archive: str(e.archive_bytes) for e in entries.values()}


def test_the_boot_loaded_every_image_with_its_recorded_id(
        booted: VM, entries: dict[str, lock.LockEntry],
        lock_entries: dict[str, lock.LockEntry]) -> None:
    """memu-stack-preload.service ran on the first boot (no network) and succeeded; the
    registry images are left to the pull by digest, each with its pinned origin."""
    assert booted.sh("systemctl is-active memu-stack-preload.service").strip() == "active"
    for e in entries.values():
        image_id = booted.sh(f"docker image inspect --format '{{{{.Id}}}}' {e.ref}").strip()
        assert image_id == e.image_id, e.name
    status, body = booted.http_get("/api/status")
    assert status == 200
    stack = json.loads(body)["stack"]
    assert stack["preload"]["state"] == "done"
    states = {k: v["state"] for k, v in stack["images"].items()}
    assert states == dict.fromkeys(entries, "loaded") | {k: states[k] for k in PULLED}
    # The VM has 3 GiB of RAM: Immich ML and Ollama are off, not even downloaded; so is
    # Tailscale (no auth key given). No registry is reachable from the guest here: the
    # others wait for the pull, or it tried and says which pinned image it could not get.
    off = ("immich-ml", "ollama", "tailscale")
    assert {k: states[k] for k in off} == dict.fromkeys(off, "off"), stack["images"]
    for k in PULLED - set(off):
        assert states[k] in ("to pull", "waiting", "pulling", "failed"), stack["images"][k]
        if states[k] == "failed":
            assert lock_entries[k].origin in stack["images"][k]["error"]
    assert {k: stack["images"][k]["from"] for k in PULLED} == {
        k: lock_entries[k].origin for k in PULLED}
    print("\npreload on first boot: " + ", ".join(
        f"{k} {v['seconds']} s" for k, v in stack["images"].items() if k in entries)
        + f"; total {stack['preload']['seconds']} s")


def test_image_config_runs_the_bot_as_non_root(booted: VM, bot: lock.LockEntry) -> None:
    cfg = json.loads(booted.sh(f"docker image inspect --format '{{{{json .Config}}}}' {bot.ref}"))
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["/usr/bin/memu-intelligence"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", *bot.healthcheck]
    who = booted.sh(f"docker run --rm --network none --entrypoint id {bot.ref}", timeout=180)
    assert re.search(r"uid=10001\(memu\) gid=10001\(memu\)", who), who


def test_docker_run_version(booted: VM, bot: lock.LockEntry, os_version: str) -> None:
    out = booted.sh(f"docker run --rm --network none {bot.ref} --version", timeout=180)
    assert out.strip().splitlines()[-1] == f"memu-intelligence {os_version}"


def test_health_check_reads_env_and_secret_file(booted: VM, bot: lock.LockEntry) -> None:
    """Configured by environment and a mounted secret file; nothing answers, so exit 1."""
    booted.sh("install -d -m 0700 /run/memu-test && echo secret > /run/memu-test/token && "
              "chmod 0444 /run/memu-test/token")
    out = booted.sh(
        f"docker run --rm --network none -v /run/memu-test/token:/run/secrets/token:ro "
        f"-e MEMU_BOT_HOMESERVER=http://127.0.0.1:9 -e MEMU_BOT_USER_ID=@memu:memu.test "
        f"-e MEMU_BOT_ACCESS_TOKEN_FILE=/run/secrets/token "
        f"-e MEMU_BOT_DATABASE_URL='host=127.0.0.1 port=9 dbname=memu user=memu' "
        f"{bot.ref} --healthcheck; echo exit=$?", timeout=180)
    assert out.strip().endswith("exit=1"), out
    assert "database" in out and "homeserver" in out, out
