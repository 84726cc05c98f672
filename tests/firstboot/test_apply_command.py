"""The apply's commands (memu_firstboot.apply._command): a command that fails for a moment,
as `docker compose up` does while a dependency's health check catches up on a busy box, is
tried again; one that keeps failing fails the step with its own last words."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from memu_common import MemuError
from memu_firstboot import apply


async def test_a_command_that_fails_once_is_tried_again(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    script = (f"import pathlib, sys; p = pathlib.Path({str(calls)!r}); "
              "n = len(p.read_text()) if p.exists() else 0; p.write_text('x' * (n + 1)); "
              "sys.exit(0 if n else 'container memu-synapse-1 is unhealthy')")
    await apply._command([sys.executable, "-c", script], "starting the assistant", "Retry",
                         tries=3, wait_s=0.0)
    assert calls.read_text() == "xx"  # failed once, then started


async def test_a_command_that_keeps_failing_fails_with_its_last_words(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    script = (f"import pathlib, sys; p = pathlib.Path({str(calls)!r}); "
              "p.write_text((p.read_text() if p.exists() else '') + 'x'); sys.exit('no')")
    with pytest.raises(MemuError, match="starting the assistant failed: no") as e:
        await apply._command([sys.executable, "-c", script], "starting the assistant",
                             "press Retry", tries=2, wait_s=0.0)
    assert e.value.hint == "press Retry" and calls.read_text() == "xx"
