"""Run the configuration's pyinfra deploy (:mod:`memu_firstboot.deploy`) on this box, as a
child process, and read what it did.

pyinfra is never imported here: its command line patches the whole process with gevent,
which must not happen to the agent's aiohttp process (nor to the apply's).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from memu_common import MemuError
from memu_firstboot.config_files import Applied

log = logging.getLogger(__name__)

#: The deploy file (it calls memu_firstboot.deploy.deploy).
DEPLOY_FILE = Path(__file__).with_name("stack_deploy.py")
#: pyinfra's command line beside this Python: /usr/bin/pyinfra on the box (the wheel's
#: script), <venv>/bin/pyinfra on a developer's machine.
PYINFRA = (str(Path(sys.executable).with_name("pyinfra")),)
#: The result line the deploy prints (memu_firstboot.deploy.RESULT).
RESULT = "memu-applied "
_OPERATION = re.compile(r"^--> Starting operation: (.+?)\s*$")
_ERROR = re.compile(r"^--> pyinfra error[^:]*: (.+)$|^\s*\[@local\] Error: (.+)$")


def parse_applied(text: str) -> Applied:
    """The :class:`Applied` from the JSON after :data:`RESULT` on a result line.

    Raises:
        MemuError: it is not one.
    """
    try:
        data = json.loads(text)
        return Applied(**{k: tuple(str(x) for x in data[k])
                          for k in ("made", "updated", "same", "kept")})
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MemuError(f"the deploy's result line is not one ({e})") from e


async def run_deploy(config_dir: Path, *, pyinfra: Sequence[str] = PYINFRA,
                     on_operation: Callable[[str], None] | None = None,
                     time_limit_s: float = 600.0) -> Applied:
    """Run the deploy on this box (pyinfra's ``@local``) for ``config_dir``; return what it
    did. ``on_operation`` is called with each operation's name as pyinfra starts it.

    Raises:
        MemuError: pyinfra is missing, timed out, or the deploy failed (its own error words
            are in the message; the whole output went to our log).
    """
    argv = [*pyinfra, "-y", "@local", str(DEPLOY_FILE), "--data",
            f"memu_config_dir={config_dir}"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except FileNotFoundError as e:
        raise MemuError(f"pyinfra is not installed ({argv[0]})",
                        hint="this OS image is incomplete: update or reinstall it") from e
    assert proc.stdout is not None
    applied: Applied | None = None
    errors: collections.deque[str] = collections.deque(maxlen=3)
    tail: collections.deque[str] = collections.deque(maxlen=5)

    async def read(stream: asyncio.StreamReader) -> None:
        nonlocal applied
        async for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip()
            log.info("deploy: %s", line)
            if line.startswith(RESULT):
                applied = parse_applied(line[len(RESULT):])
            elif m := _OPERATION.match(line):
                if on_operation is not None:
                    on_operation(m[1])
            elif m := _ERROR.match(line):
                errors.append(m[1] or m[2])
            if line.strip():
                tail.append(line.strip())

    try:
        await asyncio.wait_for(asyncio.gather(read(proc.stdout), proc.wait()), time_limit_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise MemuError(f"the configuration's deploy took over {time_limit_s:.0f} s",
                        hint="press Retry; the box's journal has its output") from None
    if proc.returncode != 0 or applied is None:
        said = "; ".join(errors) or " / ".join(tail) or f"exit status {proc.returncode}"
        raise MemuError(f"writing the configuration failed: {said}",
                        hint="press Retry; if it fails again, the box's journal has the "
                             "deploy's whole output")
    return applied
