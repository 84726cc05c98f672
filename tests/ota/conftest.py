"""Fixtures for the OTA tests: a config under tmp_path with shipped templates and a fake
systemd-sysupdate; release signing keys made with real gpg."""

from __future__ import annotations

from pathlib import Path

import pytest
from ota_fixtures import TEMPLATE, gpg, write_fake

from memu_ota.config import OtaConfig


@pytest.fixture
def ota_config(tmp_path: Path) -> OtaConfig:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "10-usr.transfer.in").write_text(TEMPLATE)
    (templates / "20-efi.transfer.in").write_text(TEMPLATE.replace("usr.raw", "efi"))
    (tmp_path / "esp").mkdir()
    return OtaConfig(
        base_url="http://updates.test/memu/",
        sysupdate=write_fake(tmp_path / "bin", {}),
        isolate=False,
        template_dir=templates,
        runtime_dir=tmp_path / "run",
        state_dir=tmp_path / "state",
        esp_dirs=(tmp_path / "esp",),
        check_interval_s=3600,
        jitter_s=0,
        delta=False,  # the delta path has its own tests (test_delta_update.py)
        os_release=(tmp_path / "os-release",),  # none: the plain image, whatever the host is
    )


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two signing keys, ``release`` and ``stranger`` (GnuPG homes), and ``keyring``: the
    release key's public keyring as a box holds it (/usr/lib/systemd/import-pubring.gpg)."""
    out = {}
    for who in ("release", "stranger"):
        home = tmp_path_factory.mktemp(who)
        home.chmod(0o700)
        gpg(home, "--quick-gen-key", f"{who}@memu.test", "ed25519", "sign", "never")
        out[who] = home
    out["keyring"] = out["release"] / "import-pubring.gpg"
    out["keyring"].write_bytes(gpg(out["release"], "--export"))
    return out
