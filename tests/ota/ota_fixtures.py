"""Helpers for the OTA tests: the captured sysupdate runs and a fake sysupdate built from them."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from memu_dev import release
from memu_dev.app_thread import AppThread

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parents[2]


#: The block size of the synthetic slot partitions.
BLOCK = 4096


def erofs_partition(path: Path, blocks: int, partition: int) -> None:
    """A ``partition``-byte /usr partition holding an erofs(5) superblock for ``blocks`` 4 KiB
    blocks, its last byte set (what ``just release`` cuts to)."""
    sb = bytearray(128)
    struct.pack_into("<I", sb, 0, release.EROFS_MAGIC)
    sb[12] = 12  # 4 KiB blocks
    struct.pack_into("<I", sb, 36, blocks)
    with path.open("wb") as f:
        f.write(b"\0" * 1024 + bytes(sb))
        f.seek(blocks * BLOCK - 1)
        f.write(b"\x01")  # the filesystem's last byte
        f.truncate(partition)


def verity_partition(path: Path, data_blocks: int, partition: int) -> int:
    """A ``partition``-byte dm-verity hash partition (veritysetup(8) superblock, sha256, 4 KiB
    blocks) for ``data_blocks``; returns its used length."""
    sb = bytearray(512)
    sb[:8] = release.VERITY_SIGNATURE
    struct.pack_into("<II", sb, 8, 1, 1)
    sb[32:38] = b"sha256"
    struct.pack_into("<IIQH", sb, 64, BLOCK, BLOCK, data_blocks, 32)
    levels, n = [], data_blocks
    while True:
        n = math.ceil(n / 128)
        levels.append(n)
        if n <= 1:
            break
    used = BLOCK * (1 + sum(levels))
    with path.open("wb") as f:
        f.write(bytes(sb))
        f.seek(used - 1)
        f.write(b"\x01")
        f.truncate(partition)
    return used


def shipped_templates(dest: Path, boot: str = "systemd-boot") -> Path:
    """The sysupdate transfer templates an image of boot chain ``boot`` ships in
    ``/usr/lib/memu/sysupdate.d`` (``overlays/common`` and ``overlays/boot-<boot>`` both add
    to it), copied together into ``dest``; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for tree in ("common", f"boot-{boot}"):
        for template in (REPO / "overlays" / tree / "usr/lib/memu/sysupdate.d").iterdir():
            shutil.copyfile(template, dest / template.name)
    return dest

TEMPLATE = """[Transfer]
ProtectVersion=%A

[Source]
Type=url-file
Path=@SOURCE_URL@
MatchPattern=memu-os_@v.usr.raw

[Target]
Type=partition
Path=auto
MatchPattern=memu-os_@v
"""


def fixture(name: str) -> dict[str, Any]:
    """One captured run: argv, returncode, stdout, stderr, notify."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


# The fake: replays a captured run picked by its non-option arguments ("list",
# "list 0.2.0", "update 0.2.0", …) from scenario.json next to it, sending the notify
# datagrams over $NOTIFY_SOCKET like the real one, and logs each call to calls.log.
FAKE = r'''#!@PYTHON@
import json, os, socket, sys, time
here = os.path.dirname(os.path.abspath(__file__))
args = [a for a in sys.argv[1:] if not a.startswith("--")]
key = " ".join(args)
with open(os.path.join(here, "calls.log"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
scenario = json.load(open(os.path.join(here, "scenario.json")))
name = scenario.get(key) or scenario.get(args[0])
if name is None:
    sys.stderr.write(f"fake sysupdate: no scenario for {key!r}\n")
    sys.exit(99)
run = json.load(open(os.path.join(@FIXTURES@, name + ".json")))
addr = os.environ.get("NOTIFY_SOCKET", "")
if addr.startswith("@"):
    addr = "\0" + addr[1:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if addr else None
delay = float(scenario.get("delay_s", 0))
for msg in run["notify"]:
    if sock is not None:
        sock.sendto(msg.encode(), addr)
    time.sleep(delay / max(len(run["notify"]), 1))
sys.stdout.write(run["stdout"])
sys.stderr.write(run["stderr"])
sys.exit(run["returncode"])
'''


def write_fake(directory: Path, scenario: dict[str, Any]) -> Path:
    """Write the fake sysupdate and its scenario into ``directory``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "systemd-sysupdate"
    path.write_text(FAKE.replace("@PYTHON@", sys.executable)
                    .replace("@FIXTURES@", repr(str(FIXTURES))))
    path.chmod(0o755)
    set_scenario(directory, scenario)
    return path


def set_scenario(directory: Path, scenario: dict[str, Any]) -> None:
    (directory / "scenario.json").write_text(json.dumps(scenario))


def calls(directory: Path) -> list[str]:
    try:
        return (directory / "calls.log").read_text().splitlines()
    except FileNotFoundError:
        return []


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    """Run gpg on the GnuPG home ``home`` (batch, no passphrase); return its stdout."""
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode",
                           "loopback", "--passphrase", "", *args],
                          input=data, capture_output=True, check=True).stdout


def source_pattern(match: str, version: str, arch: str = "x86-64",
                   image: str = "memu-os") -> re.Pattern[str]:
    """A sysupdate.d(5) MatchPattern of a template as a regex (``@v`` the version, ``@u`` a
    UUID, ``%a`` ``arch``, ``@IMAGE_NAME@`` ``image``, as the agent renders it) that, like
    systemd-sysupdate 257, also accepts a name that only begins with the pattern
    (``re.match`` without an end anchor)."""
    text = re.escape(match.replace("%a", arch).replace("@IMAGE_NAME@", image))
    return re.compile(text.replace("@v", re.escape(version)).replace("@u", "[0-9a-f]+"))


def source_patterns(directory: Path, glob: str = "*.transfer.in") -> list[str]:
    """Every ``[Source] MatchPattern=`` of the transfer files (templates by default) in
    ``directory``."""
    found = []
    for template in sorted(directory.glob(glob)):
        section = ""
        for line in template.read_text().splitlines():
            if line.startswith("["):
                section = line.strip()
            elif section == "[Source]" and line.startswith("MatchPattern="):
                found.append(line.split("=", 1)[1].strip())
    return found


class Server:
    """An HTTP server on loopback in its own thread: ``/c/`` serves ``root`` as a static
    channel (aiohttp's FileResponse answers ``Range`` with 206), ``/flaky/`` answers each
    range but breaks its first connection halfway, ``/norange/`` ignores ``Range``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests = 0
        self._broken: set[str] = set()
        self.url = ""

    async def _count(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        name = request.match_info["name"]
        if request.path.startswith("/norange/"):
            return web.Response(body=(self.root / name).read_bytes())
        if request.path.startswith("/flaky/") and "Range" in request.headers:
            first, last = request.headers["Range"].removeprefix("bytes=").split("-")
            start, end = int(first), int(last)
            if last not in self._broken:  # the resumed request (same end) is answered
                self._broken.add(last)
                body = (self.root / name).read_bytes()[start:end + 1]
                resp = web.StreamResponse(status=206, headers={
                    "Content-Range": f"bytes {start}-{end}/{(self.root / name).stat().st_size}",
                    "Content-Length": str(len(body))})
                await resp.prepare(request)
                await resp.write(body[:len(body) // 2])
                assert request.transport is not None
                request.transport.close()
                return resp
        return web.FileResponse(self.root / name)

    def __enter__(self) -> Server:
        app = web.Application()
        app.router.add_get("/{kind}/{name}", self._count)
        self._thread = AppThread(app, timeout=10)
        self.url = self._thread.url
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.close()


def publish(root: Path, files: dict[str, bytes], signer: Path) -> None:
    """A channel as `just release` makes it: the files, SHA256SUMS and its signature."""
    root.mkdir(exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items()))
    (root / "SHA256SUMS").write_text(sums)
    (root / "SHA256SUMS.gpg").write_bytes(gpg(signer, "--detach-sign", "--output", "-",
                                               str(root / "SHA256SUMS")))
