"""The preload's pure decisions: which of the slot's images Docker lacks, which tags no OS
slot needs any more, and which versions' images are remembered; and what ``/api/status``
makes of the preload's status file."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path

from memu_agent.preload import (
    plan,
    remember,
    repository,
    shown_ref,
    tagged_only,
    unneeded,
    unneeded_pulled,
)
from memu_agent.stack import (
    NEEDS_LABEL,
    Compose,
    exclusive,
    may_start,
    needs,
    present_ids,
    read_preload,
    startable,
    up,
)
from memu_common.container_lock import LockEntry

COMPOSE = Path(__file__).parents[2] / "overlays/common/usr/share/memu/stack/compose.yaml"


def entry(name: str, digit: str) -> LockEntry:
    return LockEntry(
        name=name, ref=f"memu/{name}:0.1.0", source="built", origin=f"image/{name}",
        platform="linux/amd64", image_id="sha256:" + digit * 64,
        manifest_digest="sha256:" + "e" * 64, archive=f"memu-{name}.tar",
        archive_sha256="sha256:" + "f" * 64, archive_bytes=1)


def test_only_missing_images_are_loaded_in_lock_order() -> None:
    pg, hs, bot = entry("postgres", "1"), entry("synapse", "2"), entry("intelligence", "3")
    result = plan([pg, hs, bot], {"sha256:" + "2" * 64, "sha256:" + "9" * 64})
    assert result.load == (pg, bot)
    assert result.tag == (hs,)


def test_an_image_already_tagged_needs_nothing() -> None:
    """A warm boot: Docker has both images; one still carries its tag, the other lost it
    (someone ran `docker rmi` on the tag) or carries it on another image."""
    pg, hs = entry("postgres", "1"), entry("synapse", "2")
    ids = {pg.image_id, hs.image_id, "sha256:" + "9" * 64}
    tagged = [(pg.image_id, pg.ref), ("sha256:" + "9" * 64, hs.ref)]
    result = plan([pg, hs], ids, tagged)
    assert (result.load, result.tag, result.ready) == ((), (hs,), (pg,))


def test_a_docker_hub_image_is_matched_as_docker_shows_it() -> None:
    """`docker image ls` drops Docker Hub's host: the lock's docker.io/tailscale/tailscale:v1
    is listed as tailscale/tailscale:v1, and is tagged already; its old tags are ours."""
    ts = dataclasses.replace(entry("tailscale", "5"), ref="docker.io/tailscale/tailscale:v1")
    assert plan([ts], {ts.image_id}, [(ts.image_id, "tailscale/tailscale:v1")]).ready == (ts,)
    assert shown_ref("docker.io/library/nginx:1") == "nginx:1"
    assert shown_ref("ghcr.io/element-hq/element-web:v1") == "ghcr.io/element-hq/element-web:v1"
    digest = "docker.io/tailscale/tailscale@sha256:" + "a" * 64
    listed = [("sha256:x", digest.removeprefix("docker.io/")),
              ("sha256:y", "tailscale/tailscale@sha256:" + "b" * 64)]
    assert unneeded_pulled(listed, [digest], ["docker.io/tailscale/tailscale"]) == [
        "tailscale/tailscale@sha256:" + "b" * 64]
    old = [("sha256:old", "tailscale/tailscale:v0")]
    assert unneeded(old, [ts.image_id], ["docker.io/tailscale/tailscale"]) == [
        "tailscale/tailscale:v0"]


def test_untagged_images_are_not_tags() -> None:
    listing = [("sha256:a", "memu/postgres:0.1.0"), ("sha256:b", "<none>:<none>")]
    assert tagged_only(listing) == [("sha256:a", "memu/postgres:0.1.0")]


def test_a_fresh_engine_loads_everything() -> None:
    entries = [entry("postgres", "1"), entry("valkey", "4")]
    assert plan(entries, []).load == tuple(entries)


def test_repository_of_a_reference() -> None:
    assert repository("memu/postgres:0.1.0") == "memu/postgres"
    assert repository("registry.local:5000/memu/x:1") == "registry.local:5000/memu/x"
    assert repository("registry.local:5000/memu/x") == "registry.local:5000/memu/x"


def test_prune_keeps_what_either_slot_needs_and_other_repositories() -> None:
    present = [("sha256:old-pg", "memu/postgres:0.1.0"),
               ("sha256:new-pg", "memu/postgres:0.3.0"),
               ("sha256:rollback-pg", "memu/postgres:0.2.0"),
               ("sha256:new-pg", "memu/postgres:0.2.9"),
               ("sha256:family-app", "someone/app:latest")]
    needed = ["sha256:new-pg", "sha256:rollback-pg"]
    assert unneeded(present, needed, ["memu/postgres"]) == ["memu/postgres:0.1.0"]


def test_the_record_keeps_the_booted_version_and_the_one_before() -> None:
    record = remember([], "0.1.0", ["sha256:a"], ["memu/a"])
    record = remember(record, "0.2.0", ["sha256:b"], ["memu/a"])
    assert [r["version"] for r in record] == ["0.2.0", "0.1.0"]
    # A rollback to 0.1.0 keeps 0.2.0 (still in the other slot); a third version drops 0.1.0.
    rolled_back = remember(record, "0.1.0", ["sha256:a"], ["memu/a"])
    assert [r["version"] for r in rolled_back] == ["0.1.0", "0.2.0"]
    third = remember(record, "0.3.0", ["sha256:c"], ["memu/a"])
    assert [r["version"] for r in third] == ["0.3.0", "0.2.0"]
    assert remember([{"version": 1}, "junk"], "0.1.0", [], []) == [  # type: ignore[list-item]
        {"version": "0.1.0", "image_ids": [], "repositories": [], "pulled": []}]


def test_pulled_images_go_when_no_slot_names_their_digest() -> None:
    immich = "ghcr.io/immich-app/immich-server"
    record = remember([{"version": "0.1.0", "image_ids": [], "repositories": []}],  # older
                      "0.2.0", [], [], [f"{immich}@sha256:v2"])
    record = remember(record, "0.3.0", [], [], [f"{immich}@sha256:v3"])
    present = [("sha256:i1", f"{immich}@sha256:v1"), ("sha256:i2", f"{immich}@sha256:v2"),
               ("sha256:i3", f"{immich}@sha256:v3"),
               ("sha256:x", "docker.io/someone/app@sha256:v1")]  # not ours: never touched
    needed = {o for r in record for o in r["pulled"]}
    repos = {o.rpartition("@")[0] for r in record for o in r["pulled"]}
    # 0.3.0 booted, 0.2.0 is in the other slot: v1 goes, v2 stays for a rollback.
    assert unneeded_pulled(present, needed, repos) == [f"{immich}@sha256:v1"]


def test_status_reads_the_preload_file(tmp_path: Path) -> None:
    path = tmp_path / "preload.json"
    assert read_preload(path) == {"preload": {"state": "not started"},
                                  "pull": {"state": "not started"}, "images": {}}
    path.write_text(json.dumps({"version": "0.2.0", "state": "failed", "seconds": 3.5,
                                "images": {"a": {"state": "refused", "error": "bad"}},
                                "pruned": []}))
    assert read_preload(path) == {
        "preload": {"state": "failed", "version": "0.2.0", "seconds": 3.5},
        "pull": {"state": "not started"},
        "images": {"a": {"state": "refused", "error": "bad"}}}
    path.write_text("{torn")
    assert read_preload(path)["preload"] == {"state": "not started"}


def test_the_pull_reports_on_the_images_the_slot_does_not_carry(tmp_path: Path) -> None:
    """The pull's word replaces the preload's "to pull", and only that: a pull status left
    from another slot's lock cannot overwrite what the preload says of a loaded image."""
    preload, pull = tmp_path / "preload.json", tmp_path / "pull.json"
    preload.write_text(json.dumps({"state": "done", "images": {
        "postgres": {"state": "loaded"}, "ollama": {"state": "to pull", "from": "o@sha256:1"},
        "element": {"state": "to pull", "from": "e@sha256:2"}}}))
    assert read_preload(preload, pull)["images"]["ollama"] == {"state": "to pull",
                                                               "from": "o@sha256:1"}
    pull.write_text(json.dumps({"state": "running", "images": {
        "ollama": {"state": "pulling", "bytes": 10, "total": 40},
        "postgres": {"state": "failed"}}}))
    stack = read_preload(preload, pull)
    assert stack["pull"] == {"state": "running"}
    assert stack["images"] == {
        "postgres": {"state": "loaded"},
        "ollama": {"state": "pulling", "from": "o@sha256:1", "bytes": 10, "total": 40},
        "element": {"state": "to pull", "from": "e@sha256:2"}}


def test_services_start_only_with_their_images_and_their_dependencies() -> None:
    project = {"services": {
        "postgres": {"image": "sha256:pg"},
        "synapse": {"image": "sha256:hs", "depends_on": {"postgres": {}}},
        "bot": {"image": "sha256:bot", "depends_on": {"synapse": {}}},
        "valkey": {"image": "memu/not-loaded-valkey"},
        "proxy": {"image": "sha256:nginx"}}}
    everything = startable(project, {"sha256:pg", "sha256:hs", "sha256:bot", "sha256:nginx",
                                     "sha256:valkey"})
    assert everything.start == ("bot", "postgres", "proxy", "synapse")
    assert everything.not_started == {"valkey": "image not loaded"}
    no_db = startable(project, {"sha256:hs", "sha256:bot", "sha256:nginx"})
    assert no_db.start == ("proxy",)
    assert no_db.not_started == {
        "postgres": "image not loaded", "valkey": "image not loaded",
        "synapse": "needs postgres, which cannot start",
        "bot": "needs synapse, which cannot start"}
    # An optional service switched off (or too big for the box) is not started, and says so;
    # what depends on it does not start either.
    off = startable(project, {"sha256:pg", "sha256:hs", "sha256:bot", "sha256:nginx"},
                    off={"synapse": "switched off in the stack's settings"})
    assert off.start == ("postgres", "proxy")
    assert off.not_started["synapse"] == "off: switched off in the stack's settings"
    assert off.not_started["bot"] == "needs synapse, which cannot start"


def test_the_stack_starts_with_preloaded_and_pulled_images(tmp_path: Path) -> None:
    (tmp_path / "images.env").write_text("MEMU_IMAGE_POSTGRES=sha256:pg\n# note\n")
    (tmp_path / "pulled.env").write_text("MEMU_IMAGE_OLLAMA=sha256:ol\n")
    assert present_ids(tmp_path / "images.env", tmp_path / "pulled.env",
                       tmp_path / "missing.env") == {"sha256:pg", "sha256:ol"}
    # may_start: only when this boot's start said so (not before it ran, not after a failed
    # restore of the stack's data).
    status = tmp_path / "data.json"
    assert not may_start(status)
    status.write_text('{"step": "failed", "start": false}')
    assert not may_start(status)
    status.write_text('{"step": "nothing", "start": true}')
    assert may_start(status)


def test_a_need_named_by_label_holds_a_service_back_like_depends_on() -> None:
    """Synapse needs PostgreSQL without a depends_on (Compose would hold its start until
    PostgreSQL's container has started): its label still keeps it from starting when
    PostgreSQL cannot."""
    project = {"services": {
        "postgres": {"image": "sha256:pg"},
        "synapse": {"image": "sha256:hs", "labels": {NEEDS_LABEL: "postgres"}},
        "bot": {"image": "sha256:bot", "depends_on": {"synapse": {}},
                "labels": {NEEDS_LABEL: " postgres , synapse,"}}}}
    assert needs(project["services"]["bot"]) == ["synapse", "postgres"]
    assert startable(project, {"sha256:pg", "sha256:hs", "sha256:bot"}).start == (
        "bot", "postgres", "synapse")
    no_db = startable(project, {"sha256:hs", "sha256:bot"})
    assert no_db.start == ()
    assert no_db.not_started["synapse"] == "needs postgres, which cannot start"


def test_the_shipped_stack_starts_synapse_with_postgres_not_after_it() -> None:
    """compose.yaml: Synapse is in Compose's first wave (its entrypoint waits for a database
    login), and still needs PostgreSQL."""
    block = re.search(r"^  synapse:\n(.*?)^  \w", COMPOSE.read_text(), re.M | re.S)
    assert block is not None
    assert not re.search(r"^ +depends_on:", block[1], re.M)
    assert re.search(rf"^      {re.escape(NEEDS_LABEL)}: postgres$", block[1], re.M)


def test_up_waits_while_another_compose_changes_the_project(tmp_path: Path) -> None:
    """The pull's `up` and memu-stack's must not run Compose at the same moment: the second
    waits for the first's lock (seen as a first boot's "Conflict. The container name …")."""
    calls = tmp_path / "calls"
    fake = tmp_path / "compose"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho \'{{"services": {{}}}}\'\n')
    fake.chmod(0o755)
    compose = Compose(command=(str(fake),), env_files=(), lock=tmp_path / "run" / "compose.lock")
    assert compose.lock is not None
    with exclusive(compose.lock):
        other = threading.Thread(target=up, args=(compose, set(), {}))
        other.start()
        other.join(timeout=1.0)
        assert other.is_alive() and not calls.exists(), "Compose ran while the lock was held"
    other.join(timeout=30)
    assert not other.is_alive()
    assert "config --format json" in calls.read_text()
