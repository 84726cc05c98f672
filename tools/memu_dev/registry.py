"""A container registry on the build host's loopback for tests (Debian's ``docker-registry``
2.8, the CNCF distribution registry, plain HTTP): registry images' stand-ins are pushed to
it with skopeo, so the build's copy by digest and the device's pull by digest (from a QEMU
guest it is ``10.0.2.2:<port>``) are tested against the real protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from memu_common import MemuError, run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class Registry:
    """A running registry: ``host`` (``127.0.0.1:<port>``) and its ``storage`` directory."""

    host: str
    storage: Path

    def push(self, archive: Path, name: str) -> str:
        """Push the docker-archive ``archive`` as ``<host>/<name>`` (``repo:tag``); return the
        manifest digest the registry holds it under (``sha256:<hex>``).

        Raises:
            MemuError: skopeo failed.
        """
        digest_file = self.storage.parent / f".{name.replace('/', '_')}.digest"
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
             f"--digestfile={digest_file}", f"docker-archive:{archive}",
             f"docker://{self.host}/{name}"], timeout=600)
        return digest_file.read_text().strip()


@contextlib.contextmanager
def serve(storage: Path, port: int | None = None, timeout: float = 30) -> Iterator[Registry]:
    """Run ``docker-registry serve`` on 127.0.0.1:``port`` (a free one by default) with its
    blobs under ``storage`` (kept afterwards) until the block ends.

    Raises:
        MemuError: it is not installed (tools/setup-services.sh installs it) or did not answer
            within ``timeout`` seconds.
    """
    port = port or free_port()
    storage.mkdir(parents=True, exist_ok=True)
    config = storage.parent / f"{storage.name}.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {storage}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    try:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError as e:
        raise MemuError("docker-registry is not installed",
                        hint="run tools/setup-services.sh (apt-get install docker-registry)") from e
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise MemuError(f"docker-registry did not answer on port {port}",
                                    hint="is the port taken?") from None
                time.sleep(0.2)
        yield Registry(f"127.0.0.1:{port}", storage)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
