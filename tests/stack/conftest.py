"""Fixtures for the stack's container images, run on the build host's Docker (fast, no VM).

A private ``dockerd`` (memu_dev.engine) is started once per session; the images ``just
build`` made are loaded from their archives (those the OS image carries), checked
against their lock entries. Fails, never skips, with a hint when Docker or a build is
missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memu_common import MemuError
from memu_common import container_lock as lock
from memu_dev import engine as docker_engine
from memu_dev.registry import Registry, serve


@pytest.fixture(scope="session")
def engine() -> Iterator[docker_engine.Engine]:
    try:
        eng = docker_engine.start()
    except MemuError as e:
        pytest.fail(f"{e.message} ({e.hint})", pytrace=False)
    yield eng
    eng.stop()


@pytest.fixture(scope="session")
def images(engine: docker_engine.Engine) -> dict[str, lock.LockEntry]:
    """Every built image's lock entry by name, loaded into ``engine``."""
    try:
        return docker_engine.load_built(engine)
    except MemuError as e:
        pytest.fail(f"{e.message} ({e.hint})", pytrace=False)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry on 127.0.0.1:<free port> (memu_dev.registry), for this test only."""
    try:
        with serve(tmp_path / "registry") as reg:
            yield reg
    except MemuError as e:
        pytest.fail(f"{e.message} ({e.hint})", pytrace=False)
