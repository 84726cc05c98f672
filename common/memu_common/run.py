"""The one way every Memu OS subprocess runs (modelled on mkosi's run()): :func:`run` for
synchronous callers, :func:`run_feeding` for a large stdin streamed from the caller,
:func:`run_async` for the event loop (optionally listening for the child's sd_notify
datagrams, see :mod:`memu_common.notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memu_common.errors import MemuError
from memu_common.notify import NotifyCallback, NotifyListener

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
        raise _failed(f"exit {proc.returncode}", line, proc.stderr if capture else "", hint)
    return proc


def _failed(why: str, line: str, stderr: str | None, hint: str | None) -> MemuError:
    """Log a failed command and return the error to raise: the command line and the last
    five lines of its stderr."""
    tail = (stderr or "").strip().splitlines()[-5:]
    detail = ("\n  " + "\n  ".join(tail)) if tail else ""
    log.error("command failed (%s): %s%s", why, line, detail)
    return MemuError(f"command failed ({why}): {line}{detail}", hint=hint)


def run_feeding(
    argv: Sequence[str | Path],
    chunks: Iterable[bytes],
    *,
    timeout: float | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one command with ``chunks`` written to its stdin as they come (for large inputs
    that the caller also inspects on the way, e.g. hashing an archive while ``docker load``
    reads it), and check its exit status.

    stdout and stderr go to temporary files (not pipes), so a chatty child cannot block while
    we are still writing its stdin.

    Args:
        argv: the command and its arguments; never passed through a shell.
        chunks: the bytes for stdin, in order; stdin is closed after the last one.
        timeout: seconds the child may take after its stdin is closed (None: no limit).
        hint: what to tell the person when the command fails.

    Raises:
        MemuError: the command is missing, timed out, stopped reading its input, or failed;
            the message carries the command line and the last lines of its stderr.
    """
    cmd = [str(a) for a in argv]
    line = shlex.join(cmd)
    log.debug("run (fed): %s", line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err)
        except FileNotFoundError as e:
            raise MemuError(f"command not found: {cmd[0]}", hint=hint or "is it installed?") from e
        assert proc.stdin is not None
        broken = False
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            broken = True
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        try:
            returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            proc.kill()
            proc.wait()
            raise MemuError(f"command timed out after {timeout}s: {line}", hint=hint) from e
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    if returncode != 0 or broken:
        why = f"exit {returncode}" if returncode != 0 else "stopped reading its input"
        raise _failed(why, line, stderr, hint)
    return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)


@dataclass
class Completed:
    """A finished command: its exit status, output and notify datagrams (in order)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    notify: list[dict[str, str]] = field(default_factory=list)

    def stderr_tail(self, lines: int = 8) -> str:
        """The last ``lines`` of stderr, for logs."""
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


async def run_async(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    time_limit_s: float | None = None,
    notify_dir: Path | None = None,
    on_notify: NotifyCallback | None = None,
) -> Completed:
    """Run one command (never through a shell) and collect its output; never checks the
    exit status (the caller explains failures).

    Args:
        argv: the command and its arguments.
        env: extra environment on top of ours.
        time_limit_s: seconds before the child is killed.
        notify_dir: when given, listen for sd_notify datagrams on a socket in this
            directory; the child gets ``$NOTIFY_SOCKET``, and :data:`NOTIFY_PLACEHOLDER`
            in ``argv`` is replaced by its address (for ``systemd-run --setenv=``).
        on_notify: called for each datagram as it arrives.

    Raises:
        MemuError: the command is missing or timed out.
    """
    cmd = [str(a) for a in argv]
    datagrams: list[dict[str, str]] = []

    def collect(msg: dict[str, str]) -> None:
        datagrams.append(msg)
        if on_notify is not None:
            on_notify(msg)

    async with contextlib.AsyncExitStack() as stack:
        child_env = dict(os.environ)
        child_env.update(env or {})
        if notify_dir is not None:
            listener = await stack.enter_async_context(NotifyListener(notify_dir, collect))
            child_env["NOTIFY_SOCKET"] = listener.address
            cmd = [a.replace(NOTIFY_PLACEHOLDER, listener.address) for a in cmd]
        log.debug("run: %s", shlex.join(cmd))
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_env,
            )
        except FileNotFoundError as e:
            raise MemuError(f"command not found: {cmd[0]}", hint="is it installed?") from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(), time_limit_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise MemuError(f"command timed out after {time_limit_s}s: {shlex.join(cmd)}") from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            raise
    return Completed(
        argv=cmd,
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
        notify=datagrams,
    )


# In argv, replaced by the notify socket address (for ``systemd-run -E NOTIFY_SOCKET=…``).
NOTIFY_PLACEHOLDER = "@NOTIFY_SOCKET@"
