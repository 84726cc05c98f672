"""The [ota] table in the agent config, run-time overrides, and transfer rendering."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from ota_fixtures import shipped_templates

from memu_agent.config import AgentConfig, parse_config
from memu_common import MemuError
from memu_ota.config import Channel, OtaConfig, apply_overrides, save_overrides
from memu_ota.definitions import render, source_url


def test_ota_table_parsed_with_defaults_for_bad_values() -> None:
    config, problems = parse_config(
        {"port": 8080, "ota": {"channel": "beta", "base_url": "ftp://x/", "check_interval_s": 7200,
                               "core_units": ["docker.service"], "bogus": 1}},
        "agent.toml",
    )
    assert config.port == 8080
    assert config.ota.channel is Channel.BETA
    assert config.ota.base_url == OtaConfig().base_url
    assert config.ota.check_interval_s == 7200.0
    assert config.ota.core_units == ("docker.service",)
    assert len(problems) == 2
    assert "'ota.base_url'" in problems[0] and "http" in problems[0]
    assert "unknown key 'ota.bogus'" in problems[1]


def test_ota_must_be_a_table() -> None:
    config, problems = parse_config({"ota": "beta"}, "agent.toml")
    assert config.ota == OtaConfig()
    assert "must be a table" in problems[0]


def test_defaults() -> None:
    ota = AgentConfig().ota
    assert ota.channel == "stable"
    assert ota.check_interval_s == 6 * 3600 and ota.jitter_s == 3600
    assert ota.health_deadline_s == 300
    assert ota.core_units == ("memu-agent.service", "docker.service")
    assert str(ota.definitions_dir) == "/run/memu/sysupdate.d"
    assert str(ota.sysupdate) == "/usr/lib/systemd/systemd-sysupdate"


@pytest.mark.parametrize(
    "bad", ["http://x/memu", "file:///srv/", "https:///", "https://x/a b/", "https://x/?a=/"]
)
def test_bad_base_urls(bad: str) -> None:
    with pytest.raises(MemuError):
        source_url(bad, "stable")


def test_source_url_and_bad_channel() -> None:
    assert source_url("https://u.example/memu/", "beta") == "https://u.example/memu/beta/"
    with pytest.raises(MemuError, match="not a channel"):
        source_url("https://u.example/memu/", "nightly")


def test_overrides_round_trip_and_bad_file(ota_config: OtaConfig) -> None:
    assert apply_overrides(ota_config) == (ota_config, [])
    save_overrides(dataclasses.replace(ota_config, channel=Channel.BETA,
                                       base_url="https://mirror.example/"))
    effective, problems = apply_overrides(ota_config)
    assert (effective.channel, effective.base_url, problems) == (
        Channel.BETA, "https://mirror.example/", [])
    (ota_config.state_dir / "settings.json").write_text('{"channel": "nightly"}')
    effective, problems = apply_overrides(ota_config)
    assert effective.channel is Channel.STABLE and "not a channel" in problems[0]


def test_render_writes_transfers_and_removes_stale(ota_config: OtaConfig) -> None:
    out = ota_config.definitions_dir
    out.mkdir(parents=True)
    (out / "99-old.transfer").write_text("stale")
    written = render(ota_config.template_dir, out, "https://u.example/memu/", "beta")
    assert [p.name for p in written] == ["10-usr.transfer", "20-efi.transfer"]
    assert sorted(p.name for p in out.iterdir()) == ["10-usr.transfer", "20-efi.transfer"]
    text = (out / "10-usr.transfer").read_text()
    assert "Path=https://u.example/memu/beta/\n" in text and "@SOURCE_URL@" not in text


def test_shipped_uki_transfer_gets_three_boot_tries_unless_set(tmp_path: Path) -> None:
    """The image's own templates: a new version's boot entry is tried 3 times by default;
    ``[ota] boot_tries`` changes it (the QEMU rollback test uses 1)."""
    shipped = shipped_templates(tmp_path / "shipped")
    config, problems = parse_config({"ota": {"boot_tries": 1}}, "agent.toml")
    assert (config.ota.boot_tries, problems) == (1, [])
    for tries, out in ((OtaConfig().boot_tries, tmp_path / "default"), (1, tmp_path / "one")):
        render(shipped, out, "https://u.example/", "stable", tries)
        texts = {p.name: p.read_text() for p in out.iterdir()}
        assert f"\nTriesLeft={tries}\n" in texts["20-uki.transfer"]
        assert not any("@" + "BOOT_TRIES@" in t for t in texts.values())
    assert OtaConfig().boot_tries == 3
    _, problems = parse_config({"ota": {"boot_tries": 0}}, "agent.toml")
    assert "'ota.boot_tries'" in problems[0] and "positive" in problems[0]


def test_render_refuses_missing_or_broken_templates(tmp_path: Path) -> None:
    with pytest.raises(MemuError, match="no update definitions"):
        render(tmp_path, tmp_path / "out", "https://u.example/", "stable")
    (tmp_path / "10-usr.transfer.in").write_text("[Source]\nPath=https://fixed/\n")
    with pytest.raises(MemuError, match="has no @SOURCE_URL@"):
        render(tmp_path, tmp_path / "out", "https://u.example/", "stable")
