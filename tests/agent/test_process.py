"""The real `python -m memu_agent` process: READY, a request, SIGTERM, clean exit 0."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from agent_fixtures import NotifySocket


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        'host = "127.0.0.1"\nport = 0\ndevice_name = "Test box"\n'
        f'state_dir = "{tmp_path / "state"}"\nissue_dir = "{tmp_path / "issue.d"}"\n{extra}'
    )
    return path


def spawn(config: Path, ns: NotifySocket, **env: str) -> subprocess.Popen[str]:
    child_env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM",)}
    child_env |= {"NOTIFY_SOCKET": ns.address, **env}
    return subprocess.Popen(
        [sys.executable, "-m", "memu_agent", "--config", str(config)],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_agent_process_serves_and_stops_cleanly_on_sigterm(
    notify_socket: NotifySocket, tmp_path: Path
) -> None:
    config = write_config(tmp_path, extra="colour = 'blue'\n")
    proc = spawn(config, notify_socket, WATCHDOG_USEC="200000")
    try:
        messages = notify_socket.recv_until("READY", timeout=15)
        match = re.search(r"port (\d+)", messages[-1]["STATUS"])
        assert match, messages
        port = int(match.group(1))
        # READY means listening: connect right now, before anything else happens.
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as resp:
            status = json.load(resp)
        assert status["device_name"] == "Test box"
        assert status["setup"] == {"state": "pending"}
        assert {"WATCHDOG": "1"} in notify_socket.recv_until("WATCHDOG", timeout=2)

        proc.send_signal(signal.SIGTERM)
        stopping = notify_socket.recv_until("STOPPING", timeout=10)[-1]
        assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=10)
    assert messages[0] == {"STATUS": "starting"}
    # the config problem is reported, with file and key, and did not stop the agent
    assert f"{config}: unknown key 'colour'" in stderr
    assert "Traceback" not in stderr
    token = (tmp_path / "state" / "setup-token").read_text().strip()
    assert token in (tmp_path / "issue.d" / "50-memu.issue").read_text()


def test_agent_process_exits_1_when_port_taken(notify_socket: NotifySocket, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path)
        config.write_text(config.read_text().replace("port = 0", f"port = {port}"))
        proc = spawn(config, notify_socket)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {port}" in stderr
    assert "hint: another program is using it" in stderr
    assert "Traceback" not in stderr
    messages = notify_socket.recv_until("STOPPING", timeout=2)
    assert not any("READY" in m for m in messages)
    assert notify_socket.recv(timeout=2)["STATUS"].startswith("failed: cannot listen")


def test_agent_process_stays_up_on_a_full_disk(notify_socket: NotifySocket,
                                               tmp_path: Path) -> None:
    """Its state and console directories on a full filesystem (a 256 KiB tmpfs filled to
    the last byte): the setup token and greeting cannot be written, and the agent still
    reaches READY and answers its status and first-boot page."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI and the build hosts run as root)")
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)], check=True)
    try:
        (full / "state").mkdir()
        (full / "issue.d").mkdir()
        with (full / "filler").open("wb", buffering=0) as f:
            try:
                while True:
                    f.write(bytes(4096))
            except OSError:
                pass
        config = tmp_path / "agent.toml"
        config.write_text('host = "127.0.0.1"\nport = 0\ndevice_name = "Full box"\n'
                          f'state_dir = "{full / "state"}"\nissue_dir = "{full / "issue.d"}"\n')
        proc = spawn(config, notify_socket)
        try:
            messages = notify_socket.recv_until("READY", timeout=15)
            match = re.search(r"port (\d+)", messages[-1]["STATUS"])
            assert match, messages
            base = f"http://127.0.0.1:{match.group(1)}"
            with urllib.request.urlopen(f"{base}/api/status", timeout=5) as resp:
                assert json.load(resp)["device_name"] == "Full box"
            with urllib.request.urlopen(f"{base}/", timeout=5) as resp:
                assert resp.status == 200
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            _, stderr = proc.communicate(timeout=10)
        assert "No space left on device" in stderr
        assert "Traceback" not in stderr
    finally:
        subprocess.run(["umount", str(full)], check=False)
