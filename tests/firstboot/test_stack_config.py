"""The stack's configuration as the first-boot apply writes it from the agent's service,
whose ``UMask=0077`` must not make the containers' files unreadable to them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from memu_firstboot import stack_config


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)  # memu-agent.service's UMask=
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_modes_are_exact_under_the_services_umask(tmp_path: Path, strict_umask: None) -> None:
    config = tmp_path / "etc" / "memu" / "stack"
    stack_config.apply(stack_config.Settings("memu.local", timezone="Europe/London"), config)
    assert mode(config) == 0o700  # the box's other users stay out
    # PostgreSQL's own user lists its init scripts; Synapse's reads its configuration
    assert mode(config / "postgres") == mode(config / "postgres" / "initdb.d") == 0o755
    assert mode(config / "postgres" / "initdb.d" / "20-synapse.sql") == 0o644
    assert mode(config / "synapse") == 0o755
    assert mode(config / "synapse" / "homeserver.yaml") == 0o644
    assert mode(config / "secrets" / "synapse-registration") == 0o600
    assert mode(config / "intelligence" / "bot.env") == 0o600


def test_secrets_are_made_once(tmp_path: Path) -> None:
    assert stack_config.ensure_secrets(tmp_path, ("memu-bot-password",)) == len(
        stack_config.SECRET_NAMES) + 1
    before = {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()}
    assert stack_config.ensure_secrets(tmp_path, ("memu-bot-password",)) == 0
    stack_config.apply(stack_config.Settings("memu.local"), tmp_path)
    after = {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()}
    assert after == before
    assert all(len(v.strip()) == 64 for v in after.values())
