"""Run every check `just test` promises, in order, and print a summary.

    python -m memu_dev.check [--no-qemu] [--lint-only] [pytest args…]

Steps: ruff (lint), mypy (types, strict, on our packages), pytest (unit tests, service tests
against real PostgreSQL/Synapse, and the QEMU tests unless --no-qemu). The last line is the
test count in the plain "N passed, N failed" form.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from memu_dev.paths import REPO

RESULTS = REPO / "test-results"
LINT_PATHS = ["common", "agent", "firstboot", "ota", "intelligence", "tools", "tests"]
#: The most disk a whole test run (QEMU tests included) used here beyond what it found, in GB:
#: test builds, the golden VM, update channels, overlays (the summary's ``disk`` line).
TESTS_NEED_GB = 10.0


@dataclass(frozen=True)
class Step:
    """One check's outcome: name, exit status, wall-clock seconds."""

    name: str
    status: int
    seconds: float


def run_step(name: str, argv: list[str]) -> Step:
    """Run one check with its output on the terminal; return its outcome."""
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    status = subprocess.call(argv, cwd=REPO)
    return Step(name, status, time.monotonic() - t0)


class DiskWatch:
    """The lowest free space on the file system holding ``path`` while the tests run, sampled
    every ``interval`` seconds by a daemon thread (a run that fills the disk fails in odd
    places, e.g. mkosi's ``cp`` of a test tree; the summary then says how close it came).

    Use as a context manager; ``start_free`` and ``lowest_free`` are bytes."""

    def __init__(self, path: Path = REPO, interval: float = 5.0) -> None:
        self.path = path
        self.interval = interval
        self.start_free = self.lowest_free = shutil.disk_usage(path).free
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="disk-watch", daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self.lowest_free = min(self.lowest_free, shutil.disk_usage(self.path).free)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.lowest_free = min(self.lowest_free, shutil.disk_usage(self.path).free)

    def warning(self, need_gb: float = TESTS_NEED_GB) -> str | None:
        """A warning, when the free space at the start is below ``need_gb``; else None."""
        free_gb = self.start_free / 1e9
        if free_gb >= need_gb:
            return None
        return (f"memu: warning: {free_gb:.1f} GB free on {self.path}'s disk; a whole test run "
                f"writes up to about {need_gb:.0f} GB (test builds, VM snapshots, update "
                "channels) and fails in odd places when it runs out. Free some space, or run "
                "`just test-unit` (no VM, no image).")

    def summary(self) -> str:
        """One line: free space at the start, the lowest seen, and the most the run used."""
        gb = 1e9
        return (f"disk   {self.start_free / gb:.1f} GB free at the start, lowest "
                f"{self.lowest_free / gb:.1f} GB (the tests used up to "
                f"{(self.start_free - self.lowest_free) / gb:.1f} GB)")


def junit_counts(path: str) -> tuple[int, int, int]:
    """(passed, failed, skipped) from a pytest JUnit XML report; errors count as failed."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = failed = skipped = 0
    for s in suites:
        tests += int(s.get("tests", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def group_of(classname: str) -> str:
    """The budget group of a JUnit test class (``tests.qemu.test_ota.…``): ``unit``,
    ``services`` (the bot against real PostgreSQL and Synapse), ``stack`` (the stack's images
    on the host's Docker) or ``qemu/<file>``."""
    parts = classname.split(".")
    if len(parts) > 2 and parts[1] == "qemu":
        return f"qemu/{parts[2]}"
    if len(parts) > 1 and parts[1] == "intelligence":
        return "services"
    if len(parts) > 1 and parts[1] == "stack":
        return "stack"
    return "unit"


def junit_groups(path: str) -> dict[str, float]:
    """Seconds per budget group (see :func:`group_of`), summed over the JUnit report's test
    cases (each case's time includes its fixtures' set-up and tear-down)."""
    groups: dict[str, float] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        group = group_of(case.get("classname", ""))
        groups[group] = groups.get(group, 0.0) + float(case.get("time", 0) or 0)
    return groups


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 only when every step passed."""
    ap = argparse.ArgumentParser(description="lint, type-check and test Memu OS")
    ap.add_argument("--no-qemu", action="store_true", help="skip the tests that boot images")
    ap.add_argument("--lint-only", action="store_true", help="only ruff and mypy")
    args, pytest_args = ap.parse_known_args(argv)
    py = sys.executable
    steps = [
        run_step("lint", [py, "-m", "ruff", "check", *LINT_PATHS]),
        run_step("types", [py, "-m", "mypy"]),
    ]
    counts = None
    groups: dict[str, float] = {}
    disk: DiskWatch | None = None
    if not args.lint_only:
        RESULTS.mkdir(exist_ok=True)
        junit = RESULTS / "junit.xml"
        junit.unlink(missing_ok=True)
        marker = ["-m", "not qemu"] if args.no_qemu else []
        # --durations: the slowest tests in the log, to keep CI's 90-minute budget in view.
        with DiskWatch() as disk:
            if not args.no_qemu and (warning := disk.warning()):
                print(warning, file=sys.stderr, flush=True)
            steps.append(run_step("tests", [py, "-m", "pytest", *marker,
                                            f"--junitxml={junit}", "--durations=12",
                                            *pytest_args]))
        if junit.exists():
            counts = junit_counts(str(junit))
            groups = junit_groups(str(junit))
    print("\n=== summary")
    for s in steps:
        print(f"  {s.name:<6} {'ok' if s.status == 0 else 'FAILED':<7} {s.seconds:7.1f} s")
    for group, seconds in sorted(groups.items()):
        print(f"    {group:<26} {seconds:7.1f} s")
    if disk:
        print(f"  {disk.summary()}")
    if counts:
        passed, failed, skipped = counts
        print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if all(s.status == 0 for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
