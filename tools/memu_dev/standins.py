"""Stand-ins for the stack's registry images, built on the host's Docker for tests and the
bench: no container registry is reachable from our build hosts, so the real Element, Immich
and Ollama images are not exercised here. Each stand-in (``standin/``: one stdlib Python
server on our bot image's Python) listens on the real image's port and answers its health
endpoint (Ollama: also its model pull protocol), so the stack's routing, health, start order
and configuration mounts are tested for real.
"""

from __future__ import annotations

from memu_dev.engine import Engine
from memu_dev.paths import REPO

CONTEXT = REPO / "tools/memu_dev/standin"
#: compose.yaml's registry services that have a stand-in (Tailscale needs a tailnet: none).
ROLES = ("element", "immich-server", "immich-ml", "ollama")


def build(engine: Engine, base: str, roles: tuple[str, ...] = ROLES) -> dict[str, str]:
    """Build each role's stand-in on ``engine`` from the image ``base`` (one with
    ``/usr/bin/python3`` and psycopg: our bot's image); return ``{role: image ID}``, ready
    for ``pulled.env`` as the device's pull would write it.

    Raises:
        MemuError: ``docker build`` failed (its output is in the message).
    """
    out = {}
    for role in roles:
        tag = f"memu-standin/{role}:test"
        engine.docker("build", "--quiet", "--build-arg", f"BASE={base}",
                      "--build-arg", f"ROLE={role}", "--tag", tag, CONTEXT, timeout=600)
        out[role] = engine.inspect("image", tag)["Id"]
    return out
