"""sd_notify over a real AF_UNIX datagram socket, path and abstract; watchdog interval."""

from __future__ import annotations

from pathlib import Path

from agent_fixtures import NotifySocket

from memu_agent.notify import Notifier, socket_address, watchdog_interval


def test_socket_address_kinds() -> None:
    assert socket_address(None) is None
    assert socket_address("") is None
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == "\0abc"
    assert socket_address("vsock:2:1234") is None


def test_sends_key_value_lines(notify_socket: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.enabled
    assert notifier.notify(READY="1", STATUS="two\nlines")
    assert notify_socket.recv() == {"READY": "1", "STATUS": "two lines"}
    assert notifier.status("working")
    assert notify_socket.recv() == {"STATUS": "working"}
    notifier.close()


def test_unset_is_a_noop() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify(READY="1") is False


def test_vanished_socket_is_logged_not_raised(tmp_path: Path, caplog: object) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.notify(READY="1") is False


def test_watchdog_interval_is_half_of_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "42"}, pid=42) == 0.1


def test_watchdog_interval_off() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "42"}, pid=7) is None
