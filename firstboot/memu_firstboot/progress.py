"""Steps run in order with their progress in a file: the shape the first-boot apply
(:mod:`memu_firstboot.apply`) writes and the agent's progress page reads.

The progress file (``<state_dir>/setup-progress.json``, 0644, written atomically after every
change)::

    {"state": "running" | "failed" | "done",
     "started_at": 1733200000.0,        # seconds since the epoch
     "steps": [{"name": "secrets", "label": "Secrets",
                "state": "waiting" | "running" | "done" | "failed" | "skipped" | "later",
                "seconds": 0.4,           # how long it ran (null while waiting)
                "message": "…", "hint": "…"}]}

A reader that finds ``running`` while no process runs the steps calls it ``interrupted``
(a power cut or a crash).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from memu_common import MemuError
from memu_common.files import write_json_atomic

log = logging.getLogger(__name__)

PROGRESS_FILE = "setup-progress.json"

Ctx = TypeVar("Ctx")


class StepState:
    """The states a step shows on the progress page."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    LATER = "later"


class RunState:
    """The states a whole run shows (``interrupted`` is a reader's name for a ``running``
    file whose process is gone)."""

    RUNNING = "running"
    FAILED = "failed"
    DONE = "done"
    INTERRUPTED = "interrupted"


class Skipped(Exception):
    """A step that has nothing to do here (e.g. no Tailscale key); the message says why,
    in plain words."""


class Later(Exception):
    """A step that could not finish now but will on its own, and that the rest does not
    need (e.g. remote access while the box is offline); the message says what happens."""


@dataclass(frozen=True)
class Step(Generic[Ctx]):
    """One step: ``name`` (stable, for the progress file), ``label`` (for the page) and the
    coroutine doing it on the run's context, which returns a short plain-words result,
    raises :class:`Skipped`, or raises (a :class:`MemuError`'s message and hint are shown)."""

    name: str
    label: str
    do: Callable[[Ctx], Awaitable[str]] = field(repr=False)


@dataclass
class Progress:
    """The progress file at ``path`` for ``steps`` (the module docstring gives its shape);
    written once, all steps waiting, when made."""

    path: Path
    steps: Sequence[Step[Any]]
    clock: Callable[[], float] = time.time
    body: dict[str, Any] = field(init=False)
    _said_at: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        self.body = {"state": RunState.RUNNING, "started_at": self.clock(),
                     "steps": [{"name": s.name, "label": s.label, "state": StepState.WAITING,
                                "seconds": None, "message": "", "hint": ""}
                               for s in self.steps]}
        self.write()

    def write(self) -> None:
        """Replace the file atomically.

        Raises:
            OSError: it cannot be written.
        """
        write_json_atomic(self.path, self.body, mode=0o644)

    def step(self, i: int, **values: Any) -> None:
        """Update step ``i``'s fields (state, seconds, message, hint) and write."""
        self.body["steps"][i].update(values)
        self.write()

    def say(self, message: str, every_s: float = 0.5) -> None:
        """Show ``message`` on the running step (what it is doing now), at most once per
        ``every_s`` seconds: a step's many small doings must not each rewrite the file."""
        now = self.clock()
        if now - self._said_at < every_s:
            return
        for step in self.body["steps"]:
            if step["state"] == StepState.RUNNING:
                step["message"] = message
                self._said_at = now
                self.write()
                return

    def finish(self, state: str) -> None:
        """Set the run's state (a :class:`RunState`) and write."""
        self.body["state"] = state
        self.write()


async def run_steps(ctx: Ctx, steps: Sequence[Step[Ctx]], progress: Progress) -> bool:
    """Run ``steps`` on ``ctx`` in order, reporting each into ``progress``; stop at the
    first failure (the run is then ``failed``).

    Returns:
        True when every step is done, skipped or left for later.
    """
    for i, step in enumerate(steps):
        started = time.monotonic()
        progress.step(i, state=StepState.RUNNING)
        state, message, hint = StepState.DONE, "", ""
        try:
            message = await step.do(ctx)
        except Skipped as e:
            state, message = StepState.SKIPPED, str(e)
        except Later as e:
            state, message = StepState.LATER, str(e)
        except MemuError as e:
            state, message, hint = StepState.FAILED, e.message, e.hint or ""
        except Exception as e:  # a bug: show it plainly, keep the trace in the journal
            log.exception("setup step %s failed", step.name)
            state, message = StepState.FAILED, f"unexpected error: {e}"
            hint = "press Retry; if it fails again, the box's journal has the details"
        progress.step(i, state=state, message=message, hint=hint,
                      seconds=round(time.monotonic() - started, 1))
        log.info("setup step %s: %s %s", step.name, state, message)
        if state == StepState.FAILED:
            progress.finish(RunState.FAILED)
            return False
    return True
