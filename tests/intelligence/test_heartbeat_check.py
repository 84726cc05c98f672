"""The intelligence image's health check (image/intelligence/mkosi.extra/usr/lib/memu/
intelligence-alive), run as the container runs it: by its own #! line, on the heartbeat file
the bot touches after every handled sync (Config.heartbeat_file)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

CHECK = (Path(__file__).parents[2]
         / "image/intelligence/mkosi.extra/usr/lib/memu/intelligence-alive")


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK), str(path), "150"], capture_output=True, text=True,
                          timeout=30, check=False)


def test_fresh_missing_and_stale_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "alive"
    missing = check(beat)
    assert missing.returncode == 1 and "no heartbeat yet" in missing.stderr
    beat.touch()
    fresh = check(beat)
    assert (fresh.returncode, fresh.stderr) == (0, "")
    old = time.time() - 200
    os.utime(beat, (old, old))
    stale = check(beat)
    assert stale.returncode == 1 and "200 s ago" in stale.stderr and "stuck" in stale.stderr


def test_a_problem_the_bot_reports_fails_the_check(tmp_path: Path) -> None:
    beat = tmp_path / "alive"
    beat.touch()
    (tmp_path / "alive.problem").write_text("signed out: the homeserver no longer accepts\n")
    result = check(beat)
    assert result.returncode == 1 and "signed out" in result.stderr
