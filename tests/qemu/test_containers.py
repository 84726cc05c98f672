"""The OS image carries the stack's container images, ready to load: the intelligence bot's
archive and the lock file under /usr/share/memu/containers, the archive's digest as recorded,
and in the guest `docker load` of it works and the loaded image runs (`--version`, as the
non-root user, configured by environment and a mounted secret file, health check wired).

Slow steps (TCG): the SHA-256 of the ~160 MB archive (~10-30 s) and `docker load` (~1-2 min).
No network is needed: every `docker run` uses `--network none`.
"""

from __future__ import annotations

import json
import re

import pytest

from memu_common import container_lock as lock
from memu_dev.vm import VM

DIR = "/usr/share/memu/containers"


@pytest.fixture(scope="module")
def bot(booted: VM, os_version: str) -> lock.LockEntry:
    """The intelligence bot's entry of the guest's lock file (which must parse)."""
    entries = lock.loads(booted.sh(f"cat {DIR}/{lock.LOCK_NAME}"))
    (entry,) = (e for e in entries if e.name == "intelligence")
    assert entry.ref == f"memu/intelligence:{os_version}"
    assert entry.source == "built" and entry.platform == "linux/amd64"
    return entry


@pytest.fixture(scope="module")
def loaded(booted: VM, bot: lock.LockEntry) -> str:
    """SLOW: `docker load -i` of the bot's archive in the guest; its output."""
    return booted.sh(f"docker load --quiet -i {DIR}/{bot.archive}", timeout=900)


def test_lock_file_and_archive_are_in_usr(booted: VM, bot: lock.LockEntry) -> None:
    listing = booted.sh(f"ls {DIR}").split()
    assert sorted(listing) == sorted([lock.LOCK_NAME, bot.archive])
    assert int(booted.sh(f"stat -c %s {DIR}/{bot.archive}")) == bot.archive_bytes


def test_archive_digest_matches_the_lock_file(booted: VM, bot: lock.LockEntry) -> None:
    """SLOW-ish: sha256sum of the archive in the guest."""
    out = booted.sh(f"sha256sum {DIR}/{bot.archive}", timeout=300)
    assert f"sha256:{out.split()[0]}" == bot.archive_sha256


def test_docker_load_gives_the_recorded_image(booted: VM, bot: lock.LockEntry,
                                              loaded: str) -> None:
    assert f"Loaded image: {bot.ref}" in loaded, loaded
    image_id = booted.sh(f"docker image inspect --format '{{{{.Id}}}}' {bot.ref}").strip()
    assert image_id == bot.image_id


def test_image_config_runs_the_bot_as_non_root(booted: VM, bot: lock.LockEntry,
                                               loaded: str) -> None:
    cfg = json.loads(booted.sh(f"docker image inspect --format '{{{{json .Config}}}}' {bot.ref}"))
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["/usr/bin/memu-intelligence"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", *bot.healthcheck]
    who = booted.sh(f"docker run --rm --network none --entrypoint id {bot.ref}", timeout=180)
    assert re.search(r"uid=10001\(memu\) gid=10001\(memu\)", who), who


def test_docker_run_version(booted: VM, bot: lock.LockEntry, os_version: str,
                            loaded: str) -> None:
    out = booted.sh(f"docker run --rm --network none {bot.ref} --version", timeout=180)
    assert out.strip().splitlines()[-1] == f"memu-intelligence {os_version}"


def test_health_check_reads_env_and_secret_file(booted: VM, bot: lock.LockEntry,
                                                loaded: str) -> None:
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
