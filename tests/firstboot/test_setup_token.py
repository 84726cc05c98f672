"""The setup token (format, modes, stability) and the console greeting."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import qrcode

from memu_agent.console import ISSUE_FILE, issue_text, setup_link, write_issue
from memu_firstboot.setup_token import ALPHABET, TOKEN_FILE, TOKEN_RE, ensure_token, generate_token


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_format() -> None:
    tokens = {generate_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert TOKEN_RE.match(token)
        groups = token.split("-")
        assert [len(g) for g in groups] == [4, 4, 4]
        assert not set("".join(groups)) & set("01oli")
        assert set("".join(groups)) <= set(ALPHABET)


def test_first_start_makes_token_with_private_modes(tmp_path: Path) -> None:
    state = tmp_path / "var" / "lib" / "memu"
    token = ensure_token(state)
    assert TOKEN_RE.match(token)
    assert mode(state) == 0o700
    assert mode(state / TOKEN_FILE) == 0o600
    assert (state / TOKEN_FILE).read_text() == token + "\n"
    assert [p.name for p in state.iterdir()] == [TOKEN_FILE]  # no temporary left behind


def test_second_start_reuses_token(tmp_path: Path) -> None:
    first = ensure_token(tmp_path / "state")
    before = (tmp_path / "state" / TOKEN_FILE).stat()
    assert ensure_token(tmp_path / "state") == first
    after = (tmp_path / "state" / TOKEN_FILE).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_loose_modes_are_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    token = ensure_token(state)
    state.chmod(0o755)
    (state / TOKEN_FILE).chmod(0o644)
    assert ensure_token(state) == token
    assert mode(state) == 0o700
    assert mode(state / TOKEN_FILE) == 0o600


def test_garbage_token_file_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / TOKEN_FILE).write_text("not a token\n")
    token = ensure_token(state)
    assert TOKEN_RE.match(token)
    assert mode(state / TOKEN_FILE) == 0o600
    assert "does not hold a valid setup token" in caplog.text


def test_issue_file_is_root_only_and_has_token_and_urls(tmp_path: Path) -> None:
    path = write_issue(tmp_path / "issue.d", issue_text("Okafor\\box", "abcd-efgh-jkmn"))
    assert path == tmp_path / "issue.d" / ISSUE_FILE
    assert mode(path) == 0o600
    text = path.read_text()
    assert "abcd-efgh-jkmn" in text
    assert "http://memu.local/" in text
    assert "http://\\4/" in text  # agetty prints the IPv4 address here
    assert "Okaforbox" in text  # a backslash in the name cannot become an agetty escape
    assert [p.name for p in path.parent.iterdir()] == [ISSUE_FILE]


def _modules(block: str) -> list[list[bool]]:
    """The drawn (light) modules of a half-block QR drawing, row by row."""
    top = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
    rows: list[list[bool]] = []
    for line in block.splitlines():
        pairs = [top[c] for c in line]
        rows += [[p[0] for p in pairs], [p[1] for p in pairs]]
    return rows


def test_issue_carries_a_qr_of_the_page_with_the_code(tmp_path: Path) -> None:
    text = issue_text("memu", "abcd-efgh-jkmn", "okafor-box.local")
    assert "http://okafor-box.local/" in text and "Setup code: abcd-efgh-jkmn" in text
    link = setup_link("okafor-box.local", "abcd-efgh-jkmn")
    assert link == "http://okafor-box.local/setup/claim?code=abcdefghjkmn"
    block = "\n".join(line for line in text.splitlines() if line and set(line) <= set("█▀▄ "))
    expected = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_L)
    expected.add_data(link)
    expected.make(fit=True)
    light = [[not dark for dark in row] for row in expected.get_matrix()]
    got = _modules(block)
    assert got[:len(light)] == light  # the drawing holds exactly this link's modules
    assert len(got[0]) <= 40  # fits an 80-column console with room to spare
    assert "\\" not in text.replace("http://\\4/", "")  # no agetty escapes but \4


def test_issue_after_setup_has_no_token(tmp_path: Path) -> None:
    text = issue_text("memu", None)
    assert "is set up" in text and "Setup code" not in text


def test_issue_rewrite_replaces(tmp_path: Path) -> None:
    write_issue(tmp_path, "one\n")
    path = write_issue(tmp_path, "two\n")
    assert path.read_text() == "two\n"
    assert mode(path) == 0o600
