"""The first-boot apply with stand-in step bodies, run by the setup-flow tests as the agent's
child process: the real request file, progress file, runner and finish (memu_firstboot.apply);
only what each step does is replaced (there is no stack in a unit test).

    python fake_apply.py STATE_DIR [FAIL_STEP]

``FAIL_STEP`` fails once: the step fails while ``STATE_DIR/fail-<step>`` is missing and
creates it, so a Retry passes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from memu_common import MemuError
from memu_firstboot import apply, progress


def main() -> int:
    state_dir = Path(sys.argv[1])
    fail = sys.argv[2] if len(sys.argv) > 2 else ""

    def body(name: str) -> Callable[[apply.Run], Awaitable[str]]:
        async def do(run: apply.Run) -> str:
            await asyncio.sleep(0.05)
            marker = state_dir / f"fail-{name}"
            if name == fail and not marker.exists():
                marker.touch()
                raise MemuError("the chat server refused making the account", hint="press Retry")
            if name == "remote-access" and not run.request.form.tailscale_auth_key:
                raise progress.Skipped("no Tailscale key given")
            return f"{name} for {run.request.form.family_name}"
        return do

    steps = tuple(progress.Step(s.name, s.label, body(s.name)) for s in apply.STEPS)
    return 0 if asyncio.run(apply.apply(apply.Box(state_dir=state_dir), steps)) else 1


if __name__ == "__main__":
    sys.exit(main())
