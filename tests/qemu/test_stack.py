"""The family stack on the device, set up as a family sets it up, with no network: in a VM
resumed from the golden first boot (whose preload already loaded every image from /usr), the
first-boot page is filled in from the host's forwarded port 80 as a browser without
JavaScript sends it (memu_dev.setup_client), with the setup code read off the console; the
apply starts the Compose project and, while Synapse makes its database, the box's power is
cut; after the reboot, Retry on the page completes the setup: it makes the accounts and the
family room, and starts the assistant. Then the admin signs in to chat through the front
door (the agent, nginx, Synapse) and the assistant answers /help in the family room; the
setup is closed; the core services are healthy, run the exact image IDs of the slot's lock
file, and keep their state on the writable partition; Synapse's admin API is not reachable
from the LAN. Then, on the same VM: an update to a trial version whose health gate fails,
which must roll the box back to the old slot, the old images and the database as the old
version left it; that boot back is also the proof that a reboot brings the family's chat and
assistant back without loading an image again and that the health gate judges it.

Versions: 0.1.0 is the image `just build` makes; 0.9.0 is a test build whose lock file
changes one image (nginx, relabelled: memu_dev.variant), whose stack changes the database's
schema before its health gate judges the boot (tests/qemu/trees/schema-change) and whose
health gate then fails on purpose (tests/qemu/trees/failing-health).

Cost (TCG): PostgreSQL's first initdb and Synapse's first start with a new database take a
few minutes; the setup's seconds per step are printed. The trial gets one boot try
(``[ota] boot_tries = 1``), not the default three: every try is a whole boot with the stack
(minutes under TCG), and the shipped default is checked by tests/ota/test_ota_config.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ota_support import (
    REPO,
    Channel,
    api,
    boot_entries,
    channel,
    ensure_build,
    install_and_wait_ready,
    point_at,
    step,
    update,
    wait_blessed,
    wait_update,
    wait_version,
)

from memu_common import container_lock as lock
from memu_dev import matrix, setup_client
from memu_dev.containers import TREE
from memu_dev.setup_client import SetupResult
from memu_dev.variant import changed_image_tree
from memu_dev.vm import VM
from memu_firstboot import provision

CORE = ("postgres", "synapse", "proxy")


@pytest.fixture(scope="module", autouse=True)
def trial() -> lock.LockEntry:
    """Build 0.9.0 before the module's VM boots (a build next to a running VM slows both);
    return the changed nginx image's lock entry."""
    tree = REPO / "test-results" / "trees" / "nginx-0.9.0"
    nginx = changed_image_tree(TREE, tree, "nginx", "0.9.0")
    ensure_build("0.9.0", "failing-health", "schema-change", tree)
    return nginx


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Channel]:
    with channel(tmp_path / "channels") as ch:
        yield ch


def _psql(vm: VM, sql: str) -> str:
    return vm.sh(f"docker exec -u postgres memu-postgres-1 psql -X -v ON_ERROR_STOP=1 "
                 f"-d synapse -tAc \"{sql}\"", timeout=120).strip()


def _status(vm: VM) -> dict[str, object]:
    code, body = vm.http_get("/api/status", timeout=30)
    assert code == 200, body
    stack: dict[str, object] = json.loads(body)["stack"]
    return stack


def _healthy(vm: VM, names: tuple[str, ...], timeout: float) -> dict[str, dict[str, str]]:
    """The stack's services once every one of ``names`` is healthy (polled every 5 s)."""
    deadline = time.monotonic() + timeout
    services: dict[str, dict[str, str]] = {}
    while time.monotonic() < deadline:
        services = _status(vm)["services"]  # type: ignore[assignment]
        if all(services.get(s, {}).get("health") == "healthy" for s in names):
            return services
        bad = {k: v for k, v in services.items() if v["state"] in ("exited", "restarting")}
        assert not bad, (bad, vm.sh("journalctl -u memu-stack.service --no-pager | tail"
                                    " -20; docker compose -p memu logs --tail 30",
                                    timeout=120, check=False))
        time.sleep(5)
    raise AssertionError(f"{names} not healthy after {timeout} s: {services}")


#: Seconds into the chat server's step (Synapse's first start: it makes its whole schema in
#: the new database) at which the setup's power is cut.
CUT_INTO_CHAT_SERVER_S = 30


@pytest.fixture(scope="module")
def stack_up(booted: VM) -> SetupResult:
    """The family's setup through the page, with the code on the box's screen, and a power
    cut in the middle of it: while Synapse makes its database on its first start. After the
    reboot the page says the setup was interrupted; Retry (the same browser: its claim
    survives the power cut) completes it. Every step done and the core services healthy."""
    code = setup_client.code_on_screen(booted.sh(f"cat {setup_client.GREETING}"))
    browser = setup_client.Browser(booted.url(""))
    browser.send(code)
    with step("the setup until the chat server's first start"):
        browser.wait_step("chat-server", "running", deadline_s=900)
    time.sleep(CUT_INTO_CHAT_SERVER_S)
    assert browser.progress()["state"] == "running"
    booted.power_cut()
    with step("boot after a power cut during the setup"):
        booted.start()
        booted.wait_http("/api/setup", timeout=600)
        booted.wait_for_shell(240)
    assert browser.progress()["state"] == "interrupted"
    _, _, page = browser.request("/setup/progress")
    assert "Retry" in page
    result = browser.retry(deadline_s=1500)
    steps = ", ".join(f"{s['name']} {s['seconds']} s" for s in result.progress["steps"])
    print(f"\nset up through the page after the power cut: Retry to done in "
          f"{result.seconds:.1f} s ({steps})")
    assert result.done, (result.progress, booted.sh(
        "journalctl -u memu-agent.service --no-pager | tail -30", check=False))
    _healthy(booted, CORE, 600)
    return result


def _admin(vm: VM) -> matrix.Registered:
    """The admin's chat session, signed in through the front door with the setup's answers."""
    return matrix.sign_in(vm.url("").rstrip("/"), setup_client.FAMILY["admin_username"],
                          setup_client.FAMILY["admin_password"], timeout=120)


def _ask_the_assistant(vm: VM, admin: matrix.Registered, text: str) -> str:
    """The assistant's reply to ``text`` in the family room, as the admin's app sees it,
    once the assistant has synced (its health check reads the heartbeat of its syncs: a
    message sent before its very first sync is history to it, not a question)."""
    _healthy(vm, ("intelligence",), 600)
    server = provision.server_of(admin.user_id)
    return asyncio.run(matrix.ask_in_room(vm.url("").rstrip("/"), admin, f"#family:{server}",
                                          f"@memu:{server}", text, deadline_s=600))


def test_the_assistant_answers_the_admin_in_the_family_room(
        booted: VM, stack_up: SetupResult) -> None:
    steps = {s["name"]: s for s in stack_up.progress["steps"]}
    assert steps["remote-access"]["state"] == "skipped"  # no Tailscale key given
    # No Immich images on this box (registry images, downloaded once online): photos'
    # administrator is left for the admin's sign-in, and nothing listens on Immich's port.
    assert steps["photos"]["state"] == "later", steps["photos"]
    assert "not on the box yet" in steps["photos"]["message"]
    reply = _ask_the_assistant(booted, _admin(booted), "/help")
    assert "/remember" in reply, reply


def test_setup_is_closed_and_its_code_gone_once_done(
        booted: VM, stack_up: SetupResult) -> None:
    """A second claim (a script, or the QR link) is refused: the box is set up."""
    status, body = api(booted, "POST", "/api/claim", {"setup_code": "k7m4-rq2x-hn9c"})
    assert status == 410 and body["error"] == "this box is already set up", body
    status, _, page = setup_client.Browser(booted.url("")).request(
        "/setup/claim?code=k7m4-rq2x-hn9c")
    assert status == 410, page
    assert "Setup code" not in booted.sh(f"cat {setup_client.GREETING}")
    assert booted.sh("ls /var/lib/memu/setup-token 2>&1 || true").strip().endswith(
        "No such file or directory")


def test_the_host_has_the_familys_time_zone_and_name(booted: VM, stack_up: SetupResult) -> None:
    """The setup's answers on the host itself (timedated, hostnamed); the host name, which
    memu.local answers to, stays; the chat client speaks the family's language."""
    family = setup_client.FAMILY
    shown = booted.sh("timedatectl show -p Timezone --value; hostnamectl --pretty; "
                      "hostnamectl --static").split()
    assert shown[0] == family["timezone"], shown
    assert " ".join(shown[1:-1]) == f"Memu ({family['family_name']})", shown
    assert shown[-1] == "memu", shown
    element = json.loads(booted.sh("cat /etc/memu/stack/element/config.json"))
    assert element["setting_defaults"]["language"] == family["language"]


def test_core_stack_starts_healthy_from_the_preloaded_images(
        booted: VM, stack_up: SetupResult) -> None:
    stack = _status(booted)
    services = stack["services"]
    assert isinstance(services, dict)
    assert {s: services[s]["health"] for s in CORE} == dict.fromkeys(CORE, "healthy")
    assert services["valkey"]["health"] == "healthy"
    assert booted.sh("systemctl is-active memu-stack.service").strip() == "active"


def test_containers_run_the_exact_images_of_the_slot(booted: VM, stack_up: SetupResult) -> None:
    entries = {e.name: e for e in lock.loads(
        booted.sh(f"cat /usr/share/memu/containers/{lock.LOCK_NAME}"))}
    for service, image in (("postgres", "postgres"), ("synapse", "synapse"),
                           ("proxy", "nginx"), ("valkey", "valkey")):
        got = booted.sh(f"docker inspect --format '{{{{.Image}}}}' memu-{service}-1").strip()
        assert got == entries[image].image_id, service


def test_state_lives_under_var_lib_memu_stack(booted: VM, stack_up: SetupResult) -> None:
    out = booted.sh("ls /var/lib/memu/stack/synapse /var/lib/memu/stack/postgres/pgdata "
                    "| head -40; findmnt -n -o FSTYPE --target /var/lib/memu/stack")
    assert "signing.key" in out and "PG_VERSION" in out and out.strip().endswith("ext4"), out


def test_synapse_answers_through_the_front_door(booted: VM, stack_up: SetupResult) -> None:
    """From the host's forwarded port 80 (the agent), through nginx, to Synapse."""
    code, body = booted.http_get("/_matrix/client/versions", timeout=30)
    assert code == 200, body
    assert any(v.startswith("v1.") for v in json.loads(body)["versions"])
    # A login reaches Synapse's database and is refused for an unknown user.
    req = urllib.request.Request(
        booted.url("/_matrix/client/v3/login"), method="POST",
        data=json.dumps({"type": "m.login.password", "password": "nope",
                         "identifier": {"type": "m.id.user", "user": "nobody"}}).encode(),
        headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=60)
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["errcode"] == "M_FORBIDDEN"
    # Synapse's admin API is not reachable from the LAN.
    code, _ = booted.http_get("/_synapse/admin/v1/server_version", timeout=30)
    assert code == 404


def test_a_failed_update_rolls_back_to_the_old_images_and_database(
        booted: VM, stack_up: SetupResult, os_version: str, served: Channel,
        trial: lock.LockEntry) -> None:
    """Last in this module. 0.9.0 starts its stack on the family's data (a copy is made
    first), runs its own nginx image, changes the database's schema, and fails its health
    gate on its one try; the box then boots 0.1.0 again, which must run 0.1.0's images on the
    database as 0.1.0 left it, with what 0.9.0 wrote kept aside. That boot is a real reboot
    of a set-up box: the preload only tags, and the gate passes only with the core services
    healthy."""
    vm = booted
    _psql(vm, "CREATE TABLE memu_test_before (note text); "
              "INSERT INTO memu_test_before VALUES ('written by 0.1.0')")
    key = vm.sh("sha256sum /var/lib/memu/stack/synapse/signing.key").split()[0]
    wait_blessed(vm, os_version)
    with step("one boot try for new versions"):
        vm.sh("mkdir -p /etc/memu && printf '[ota]\\nboot_tries = 1\\n' > /etc/memu/agent.toml"
              " && systemctl restart memu-agent.service", timeout=300)
    served.add("0.9.0")
    point_at(vm, served)
    install_and_wait_ready(vm, "0.9.0")
    status, snap = update(vm, "reboot")
    assert status == 202, snap
    with step("a failing try of 0.9.0 with its stack, then 0.1.0 again"):
        vm.wait_for(r"Linux version", timeout=300)  # the first boot of 0.9.0 starts
        st = wait_version(vm, os_version, timeout=2400)
    # The console shows every boot's command line: 0.1.0's (the golden boot), then 0.9.0
    # once (its one try), then 0.1.0 again.
    hashes = re.findall(r"Command line: usrhash=([0-9a-f]+)",
                        vm.serial_log.read_text(errors="replace"))
    assert len([h for h in hashes if h != hashes[-1]]) == 1, hashes
    with step("shell and boot-complete after the rollback"):
        vm.wait_for_shell(240)
        vm.sh("systemctl start boot-complete.target", timeout=900)
    assert "memu-os_0.9.0+0-1.efi" in boot_entries(vm)
    gate = vm.sh("journalctl -b -u memu-health-gate.service --no-pager -o cat")
    assert "healthy: all core services are up" in gate, gate
    last = str(st["update"]["last_result"])
    assert re.search(r"rolled back from 0\.9\.0 to 0\.1\.0", last), last
    assert "health" in last

    # The trial ran its own nginx image and changed the schema (the test step writes the
    # image it saw only after its schema change succeeded).
    assert vm.sh("cat /var/lib/memu-test/proxy-image-of-trial").strip() == trial.image_id
    # Back on 0.1.0: 0.1.0's images, the database as 0.1.0 left it, 0.9.0's copy aside.
    entries = {e.name: e for e in lock.loads(
        vm.sh(f"cat /usr/share/memu/containers/{lock.LOCK_NAME}"))}
    proxy = vm.sh("docker inspect --format '{{.Image}}' memu-proxy-1").strip()
    assert proxy == entries["nginx"].image_id != trial.image_id
    stack = _status(vm)
    assert stack["data"]["step"] == "restore", stack["data"]  # type: ignore[index]
    # Every image of the slot only tagged; the registry images wait for a registry (none is
    # reachable here: "to pull", or "failed" once the pull tried).
    images = stack["images"]
    assert isinstance(images, dict)
    assert {v["state"] for v in images.values()} <= {
        "present", "to pull", "waiting", "pulling", "failed", "off"}, images
    assert {k for k, v in images.items() if v["state"] == "present"} == {
        "intelligence", "postgres", "valkey", "nginx", "synapse"}, images
    assert _psql(vm, "SELECT to_regclass('memu_test_migrated') IS NULL") == "t"
    assert _psql(vm, "SELECT note FROM memu_test_before") == "written by 0.1.0"
    # 0.9.0's table is in the copy kept aside (its name is in the catalog's heap files).
    aside = vm.sh("grep -rl memu_test_migrated "
                  "/var/lib/memu/stack-snapshots/abandoned-0.9.0/postgres/pgdata/base | head -3",
                  timeout=120)
    assert aside.strip(), "0.9.0's table is not in abandoned-0.9.0"
    services = stack["services"]
    assert isinstance(services, dict)
    assert all(services[s]["health"] == "healthy" for s in CORE), services
    assert vm.sh("sha256sum /var/lib/memu/stack/synapse/signing.key").split()[0] == key
    # Each version's first boot rendered the configuration for itself before its stack
    # started (memu-config-apply.service; the same templates here, so nothing changed).
    rendered = json.loads(vm.sh("cat /var/lib/memu/config-applied.json"))
    assert [h["version"] for h in rendered["history"]][-2:] == ["0.9.0", os_version], rendered
    assert rendered["summary"].startswith("nothing to change"), rendered
    # The family's chat is back: the admin signs in, the assistant answers.
    assert "/remember" in _ask_the_assistant(vm, _admin(vm), "/help")
    # 0.9.0 is not offered again.
    with step("check after the rollback"):
        update(vm, "check")
        snap = wait_update(vm, {"idle", "failed"}, timeout=300)
    assert snap["available"] in (None, ""), snap
    assert "0.9.0" in snap["blocked"]
