"""Remote access at setup (memu_firstboot.remote and the apply's last step), against a
stand-in for tailscaled's LocalAPI on a Unix socket: the Tailscale image is a registry image
that cannot be fetched here (memu_dev.tailscale_api)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from memu_dev.tailscale_api import NO_CERTIFICATES, RUNNING, LocalApi
from memu_firstboot import apply, progress, remote
from memu_firstboot.form import SetupRequest
from memu_firstboot.remote import Remote, judge


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(states: list[dict[str, Any]]) -> tuple[Path, LocalApi]:
        api = LocalApi(states)
        socket = tmp_path / f"tailscaled-{len(runners)}.sock"
        runners.append(await api.serve(socket))
        return socket, api

    yield start
    for runner in runners:
        await runner.cleanup()


def test_judge_says_each_state_in_plain_words() -> None:
    assert judge(RUNNING) == remote.Verdict(
        Remote.CONNECTED, "connected to your tailnet: https://memu.tail1234.ts.net")
    plain = judge(NO_CERTIFICATES)
    assert plain.state is Remote.CONNECTED and plain.message.startswith(
        "connected to your tailnet as memu.tail1234.ts.net; for phone apps")
    assert "HTTPS certificates" in plain.message
    assert judge({"BackendState": "NeedsMachineAuth"}).state is Remote.NEEDS_APPROVAL
    refused = judge({"BackendState": "NeedsLogin"})
    assert refused.state is Remote.NOT_LOGGED_IN and "refused" in refused.message
    offline = judge({"BackendState": "Starting",
                     "Health": ["not connected to home DERP region 1"]})
    assert offline.state is Remote.OFFLINE
    assert "home DERP" in offline.message and "internet" in offline.message
    absent = judge(None)
    assert absent.state is Remote.OFFLINE and "downloaded" in absent.message


def test_the_https_address_needs_a_connected_box_with_a_certificate() -> None:
    assert remote.address(RUNNING) == remote.Address("memu.tail1234.ts.net")
    assert remote.address(RUNNING).url == "https://memu.tail1234.ts.net"  # type: ignore[union-attr]
    assert remote.address(NO_CERTIFICATES) is None
    assert remote.address(RUNNING | {"BackendState": "Starting"}) is None
    assert remote.address(RUNNING | {"CertDomains": ["other.tail1234.ts.net"]}) is None
    assert remote.address(None) is None


async def test_waits_until_connected(serve: Any) -> None:
    socket, api = await serve([{"BackendState": "NoState"}, {"BackendState": "Starting"},
                               RUNNING])
    verdict = await remote.wait(socket, wait_s=30, poll_s=0.05)
    assert verdict.state is Remote.CONNECTED and api.asked == 3


async def test_no_answer_or_no_login_by_the_deadline(serve: Any, tmp_path: Path) -> None:
    gone = await remote.wait(tmp_path / "missing.sock", wait_s=0.2, poll_s=0.05)
    assert gone.state is Remote.OFFLINE
    socket, api = await serve([{"BackendState": "NeedsLogin"}])
    verdict = await remote.wait(socket, wait_s=0.3, poll_s=0.05)
    assert verdict.state is Remote.NOT_LOGGED_IN and api.asked > 1
    # a stray answer without the LocalAPI's Host check passing is no answer
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as s,
        s.get("http://elsewhere/localapi/v0/status") as resp,
    ):
        assert resp.status == 403


async def test_the_setup_step_never_fails_on_remote_access(
        serve: Any, tmp_path: Path) -> None:
    """Connected: done with the name; not connected: left for later (the box works at
    home), with the reason; no key: skipped."""
    connected, _ = await serve([RUNNING])
    offline, _ = await serve([{"BackendState": "Starting"}])
    results = []
    for socket, key in ((connected, "tskey-auth-k1"), (offline, "tskey-auth-k1"),
                        (connected, "")):
        box = apply.Box(state_dir=tmp_path, tailscale_socket=socket, remote_wait_s=0.2)
        form = SetupRequest("The Okafors", "ada", "purple-kettle-sings", "Etc/UTC", "en",
                            tailscale_auth_key=key)
        steps = [s for s in apply.STEPS if s.name == "remote-access"]
        prog = progress.Progress(tmp_path / progress.PROGRESS_FILE, steps)
        async with aiohttp.ClientSession() as session:
            run = apply.Run(box, apply.StoredRequest(form, "memu.local"), session)
            assert await progress.run_steps(run, steps, prog)
        step = prog.body["steps"][0]
        results.append((step["state"], step["message"]))
    assert results[0] == ("done", "connected to your tailnet: https://memu.tail1234.ts.net")
    assert results[1][0] == "later" and "cannot reach Tailscale" in results[1][1]
    assert results[2][0] == "skipped"
