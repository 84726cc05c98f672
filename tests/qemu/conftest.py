"""Fixtures for tests that boot built Memu OS images in QEMU.

One built image is shared by every test of a run (``just test`` builds it when missing or
stale); each VM runs on a copy-on-write overlay of it, so the image itself is never written.
Serial logs are kept under test-results/qemu/ and their path is printed when a test fails.

The image's first boot happens once per run, in the golden VM (:mod:`memu_dev.golden`: on a
16 GiB virtio disk, saved when the box is up). Tests that start from a freshly booted box
(``booted``, the update tests' ``v1_vm``) resume a copy of it in seconds; the boot checks
read that first boot's console. Tests about booting on NVMe itself (the factory reset) boot
for real.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from memu_dev.golden import SHARED, Golden, restore, shared
from memu_dev.paths import REPO, image_path, version
from memu_dev.vm import VM

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


@pytest.fixture(scope="session")
def golden(built_image: Path) -> Golden:
    """The built image's first boot on a 16 GiB disk, saved once the box is up (reused
    across runs while the image is unchanged)."""
    try:
        return shared(built_image)
    except BaseException:
        print(f"\nserial log kept at {SHARED / 'serial.log'}")
        raise


@pytest.fixture(scope="module")
def booted(golden: Golden, request: pytest.FixtureRequest) -> Iterator[VM]:
    """A VM resumed from the golden first boot, shared by one module's read-only checks
    (module-scoped, so it does not run beside later tests' builds and VMs)."""
    vm = restore(golden, RESULTS / f"booted-{request.module.__name__}")
    try:
        yield vm
    except BaseException:
        print(f"\nserial log kept at {vm.serial_log}")
        raise
    finally:
        vm.stop()
        vm.overlay.unlink(missing_ok=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
