"""The stack's optional services, and whether this box runs them.

Immich's machine learning and Ollama each want several GiB of memory; on a small board they
would push chat and the database into swap. Each is "auto" by default: on when the box has
at least the RAM named in :data:`NEEDS`, off otherwise. Remote access (Tailscale) is off
unless switched on (:data:`OFF_UNLESS_ON`): it has nothing to join without the family's auth
key. The family (or an operator) can switch each "on" or "off" in the stack's settings,
``/etc/memu/stack/stack.env``::

    MEMU_OPTIONAL_IMMICH_ML=off
    MEMU_OPTIONAL_OLLAMA=auto
    MEMU_OPTIONAL_TAILSCALE=on

written by the first-boot configuration (:mod:`memu_firstboot.stack_config`) and read by
the device's pull (:mod:`memu_agent.pull`: an image that is off is not downloaded).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from memu_common.errors import MemuError
from memu_common.files import read_env_file

GIB = 1 << 30
#: Lock image name -> the RAM (bytes, MemTotal) from which "auto" runs it.
NEEDS: Mapping[str, int] = {"immich-ml": 8 * GIB, "ollama": 12 * GIB}
#: Optional services that "auto" leaves off -> why, in words.
OFF_UNLESS_ON: Mapping[str, str] = {
    "tailscale": "remote access is off: it needs a Tailscale auth key (given at setup)"}
#: Every optional service (compose.yaml's and the lock file's names).
SERVICES = (*NEEDS, *OFF_UNLESS_ON)
CHOICES = ("auto", "on", "off")


def env_name(name: str) -> str:
    """``MEMU_OPTIONAL_IMMICH_ML`` for ``immich-ml``."""
    return "MEMU_OPTIONAL_" + name.upper().replace("-", "_")


def check(choices: Mapping[str, str]) -> None:
    """Validate ``{name: "auto" | "on" | "off"}``.

    Raises:
        MemuError: an unknown service or choice (the message names the known ones).
    """
    for name, choice in choices.items():
        if name not in SERVICES:
            raise MemuError(f"{name!r} is not an optional service",
                            hint=f"optional services: {', '.join(SERVICES)}")
        if choice not in CHOICES:
            raise MemuError(f"{name}: {choice!r} is not one of {', '.join(CHOICES)}")


def env_lines(choices: Mapping[str, str]) -> str:
    """The stack.env lines for ``choices`` (every optional service, "auto" when not given)."""
    check(choices)
    return "".join(f"{env_name(n)}={choices.get(n, 'auto')}\n" for n in SERVICES)


def read_choices(env_file: Path) -> dict[str, str]:
    """The choices in ``env_file`` (a missing file or line means "auto"; a bad value is
    treated as "auto" too, so a hand edit never stops the box)."""
    values = read_env_file(env_file)
    if not values:
        return {}
    out = {}
    for name in SERVICES:
        value = values.get(env_name(name), "auto").strip()
        out[name] = value if value in CHOICES else "auto"
    return out


def mem_total(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemTotal in bytes (proc(5)); 0 when unreadable."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def enabled(name: str, memory: int, choice: str = "auto") -> tuple[bool, str]:
    """Whether ``name`` runs on a box with ``memory`` bytes of RAM under ``choice``, and why
    in words. Services not in :data:`SERVICES` always run."""
    if name not in SERVICES:
        return True, "not optional"
    if choice == "on":
        return True, "switched on"
    if choice == "off":
        return False, "switched off in the stack's settings"
    if name in OFF_UNLESS_ON:
        return False, OFF_UNLESS_ON[name]
    need = NEEDS[name]
    if memory >= need:
        return True, f"{memory / GIB:.0f} GiB of RAM (needs {need // GIB})"
    return False, (f"off on this box: {memory / GIB:.0f} GiB of RAM, it needs {need // GIB}; "
                   "switch it on in the stack's settings to run it anyway")


def switched_off(memory: int, choices: Mapping[str, str]) -> dict[str, str]:
    """The optional services a box with ``memory`` bytes of RAM does not run under
    ``choices`` (``{name: "auto" | "on" | "off"}``, missing means "auto") -> why, in words."""
    out = {}
    for name in SERVICES:
        runs, why = enabled(name, memory, choices.get(name, "auto"))
        if not runs:
            out[name] = why
    return out
