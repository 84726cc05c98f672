"""Fixtures for tests that boot built Memu OS images in QEMU.

One built image is shared by every test of a run (``just test`` builds it when missing or
stale); each VM boots a copy-on-write overlay of it, so the image itself is never written.
Serial logs are kept under test-results/qemu/ and their path is printed when a test fails.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from memu_dev.paths import REPO, image_path, version
from memu_dev.vm import VM, VMConfig

RESULTS = REPO / "test-results" / "qemu"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/qemu carries the ``qemu`` marker."""
    for item in items:
        if "tests/qemu/" in str(item.fspath):
            item.add_marker(pytest.mark.qemu)


@pytest.fixture(scope="session")
def built_image() -> Path:
    """The N100 image of the current version; fails with a hint when it was not built."""
    img = image_path("n100")
    if not img.exists():
        pytest.fail(f"{img} does not exist: run `just build` (or `just test`, which builds it)")
    return img


@pytest.fixture(scope="session")
def os_version() -> str:
    """The version the image was built with (mkosi.version)."""
    return version()


def _boot(name: str, image: Path, **kw: object) -> VM:
    workdir = RESULTS / name
    if workdir.exists():
        for f in workdir.iterdir():
            f.unlink()
    return VM(VMConfig(image=image, workdir=workdir, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def booted(built_image: Path) -> Iterator[VM]:
    """One VM booted from the built image, shared by the read-only boot checks.

    Waits (with deadlines) for the first-boot page to answer and for the root shell.
    """
    vm = _boot("boot", built_image)
    vm.start()
    try:
        vm.wait_http("/api/status", timeout=420)
        vm.wait_for_shell(timeout=180)
        yield vm
    except BaseException:
        print(f"\nserial log kept at {vm.serial_log}")
        raise
    finally:
        vm.stop()
        vm.overlay.unlink(missing_ok=True)


@pytest.fixture
def fresh_vm(built_image: Path, request: pytest.FixtureRequest) -> Iterator[VM]:
    """A VM of its own for a test that changes the guest (not started yet)."""
    vm = _boot(request.node.name, built_image)
    try:
        yield vm
    finally:
        vm.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(f"\nserial log kept at {vm.serial_log}")
        vm.overlay.unlink(missing_ok=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
