"""The console greeting: an agetty issue snippet that tells the person at the screen where
the first-boot page is and what the setup code is.

agetty shows ``/etc/issue`` plus every ``*.issue`` in ``/run/issue.d`` (and the other issue
directories, see agetty(8) "ISSUE FILES") above the login prompt, expanding escapes such as
``\\4`` (the IPv4 address of the interface with the default route). The file carries the
setup token, so it is mode 0600: agetty runs as root and can read it; other users cannot.

While the box is not set up, the snippet also carries a QR code of the page's address with
the code filled in (``http://<host>.local/setup/claim?code=…``; the page claims the box for
the phone that opens it and drops the code from the address, see
``memu_agent.setup_pages``), drawn with Unicode half blocks (python3-qrcode,
``QRCode.print_ascii``), which the Linux console's default fonts carry. Light modules are
drawn, so the code reads dark-on-light on a dark screen, as scanners expect.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import qrcode

from memu_common import MemuError, run
from memu_common.files import write_atomic

log = logging.getLogger(__name__)

ISSUE_FILE = "50-memu.issue"
# The issue directories agetty reads at run time; only a snippet there is worth a reload.
AGETTY_ISSUE_DIRS = (Path("/run/issue.d"), Path("/etc/issue.d"))


def _plain(text: str) -> str:
    """Drop backslashes (agetty escapes) and control characters from ``text``."""
    return "".join(c for c in text if c != "\\" and c.isprintable())


def setup_link(host: str, token: str) -> str:
    """The first-boot page's address with the setup code filled in (what the QR holds)."""
    code = "".join(c for c in token.lower() if c.isalnum())
    return f"http://{host}/setup/claim?code={code}"


def qr_block(data: str) -> str:
    """``data`` as a QR code (error correction L, 2-module quiet zone) in lines of Unicode
    half blocks, light modules drawn; ends with a newline."""
    qr = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_L)
    qr.add_data(data)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    # print_ascii draws "no module" as cp437's 255, a no-break space: some console fonts lack
    # it, every one has the plain space.
    return out.getvalue().replace("\xa0", " ")


def issue_text(device_name: str, token: str | None, host: str = "memu.local",
               recovery: tuple[str, int] | None = None) -> str:
    """The snippet: page URLs and, while the box is not set up, the setup token and its QR;
    once set up, an admin password recovery code while one is pending.

    Args:
        device_name: shown in the heading.
        token: the setup token, or None once the box is set up.
        host: the box's name on the network (``<hostname>.local``).
        recovery: the pending recovery code (``memu_agent.recover_pages``) and the minutes
            it is valid, or None.
    """
    name = _plain(device_name)
    host = _plain(host)
    if token is None:
        text = f"Memu OS: {name} is set up.\n  Manage it at http://{host}/ or http://\\4/\n"
        if recovery:
            code, minutes = recovery
            text += (f"  Admin password recovery code: {_plain(code)}\n"
                     f"    (type it at http://{host}/admin/recover within {minutes} minutes)\n")
        return text + "\n"
    return (
        f"Memu OS: finish setting up {name}\n"
        "  On a phone or laptop on the same network, open\n"
        f"    http://{host}/   or   http://\\4/\n"
        f"  Setup code: {_plain(token)}\n"
        "  Or scan this with the phone's camera:\n"
        + qr_block(setup_link(host, token))
        + "\n"
    )


def write_issue(issue_dir: Path, text: str) -> Path:
    """Write ``text`` to ``<issue_dir>/50-memu.issue`` atomically, mode 0600.

    Returns:
        The file's path.

    Raises:
        OSError: the directory cannot be created or written.
    """
    path = issue_dir / ISSUE_FILE
    write_atomic(path, text.encode("utf-8"), mode=0o600, dir_mode=0o755)
    return path


def show(issue_dir: Path, text: str) -> None:
    """Put ``text`` on the console now: :func:`write_issue`, then :func:`reload_agetty`
    when ``issue_dir`` is one agetty reads.

    Raises:
        OSError: the issue file cannot be written.
    """
    write_issue(issue_dir, text)
    if issue_dir in AGETTY_ISSUE_DIRS:
        reload_agetty()


def reload_agetty() -> None:
    """Ask running agettys to redraw their issue text (``agetty --reload``); failures are
    logged at debug level and ignored (no agetty, no console, or an old util-linux)."""
    try:
        proc = run(["agetty", "--reload"], check=False, timeout=10)
    except MemuError as e:
        log.debug("agetty --reload: %s", e)
        return
    if proc.returncode != 0:
        log.debug("agetty --reload exited %d: %s", proc.returncode, proc.stderr.strip())
