"""The one helper through which every Memu OS subprocess runs (modelled on mkosi's run())."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from memu_common.errors import MemuError

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one command and return its result (stdout/stderr as text when ``capture``).

    Args:
        argv: the command and its arguments; never passed through a shell.
        check: raise MemuError when the exit status is not 0.
        capture: capture stdout and stderr instead of inheriting them.
        input: text fed to stdin.
        env: the full environment for the child (None inherits ours).
        cwd: working directory.
        timeout: seconds before the command is killed (None: no limit).
        hint: what to tell the person when the command fails.

    Raises:
        MemuError: the command is missing, timed out, or (with ``check``) failed; the message
            carries the command line and the last lines of its stderr.
    """
    cmd = [str(a) for a in argv]
    line = shlex.join(cmd)
    log.debug("run: %s", line)
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            text=True,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
        )
    except FileNotFoundError as e:
        raise MemuError(f"command not found: {cmd[0]}", hint=hint or "is it installed?") from e
    except subprocess.TimeoutExpired as e:
        raise MemuError(f"command timed out after {timeout}s: {line}", hint=hint) from e
    if check and proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-5:] if capture else []
        detail = ("\n  " + "\n  ".join(tail)) if tail else ""
        log.error("command failed (exit %d): %s%s", proc.returncode, line, detail)
        raise MemuError(f"command failed (exit {proc.returncode}): {line}{detail}", hint=hint)
    return proc
