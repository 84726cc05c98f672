"""The stack's configuration as the first-boot apply writes it from the agent's service,
whose ``UMask=0077`` must not make the containers' files unreadable to them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from memu_firstboot import config_files, stack_config

COMPOSE = Path(__file__).parents[2] / "overlays/common/usr/share/memu/stack/compose.yaml"


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


def test_tailscale_serves_the_front_door_over_https_on_the_tailnet_only(tmp_path: Path) -> None:
    """The serve config the stack's tailscale container reads (TS_SERVE_CONFIG): HTTPS on
    443 with the box's certificate name (the container fills in ${TS_CERT_DOMAIN}) to the
    agent's port 80, never to the internet (no Funnel); compose.yaml mounts that file."""
    stack_config.apply(stack_config.Settings("memu.local", tailscale_auth_key="tskey-auth-k1"),
                       tmp_path)
    serve = json.loads((tmp_path / stack_config.TAILSCALE_SERVE).read_text())
    site = "${TS_CERT_DOMAIN}:443"
    assert serve == {"TCP": {"443": {"HTTPS": True}},
                     "Web": {site: {"Handlers": {"/": {"Proxy": "http://127.0.0.1:80"}}}},
                     "AllowFunnel": {site: False}}
    compose = COMPOSE.read_text()
    service = compose[compose.index("\n  tailscale:\n"):compose.index("\nnetworks:")]
    assert "\n    network_mode: host\n" in service  # so 127.0.0.1:80 is the agent
    assert "\n      TS_SERVE_CONFIG: /config/serve.json\n" in service
    assert f"}}/{stack_config.TAILSCALE_SERVE}:/config/serve.json:ro\n" in service


def element_language(config: Path, name: str = "element/config.json") -> str:
    return str(json.loads((config / name).read_text())["setting_defaults"]["language"])


def test_a_second_run_changes_nothing_and_an_edited_file_is_kept(tmp_path: Path) -> None:
    """The box re-applies its configuration (again at setup, after a change of answers):
    what nobody touched follows the new settings; a file someone edited stays as they left
    it, with the box's new version beside it for the admin to merge."""
    first = stack_config.apply(stack_config.Settings("memu.local"), tmp_path)
    assert first.made and not first.updated and not first.kept
    again = stack_config.apply(stack_config.Settings("memu.local"), tmp_path)
    assert (again.made, again.updated, again.kept) == ((), (), ())
    assert sorted(again.same) == sorted(first.made)
    assert again.summary() == f"nothing to change ({len(first.made)} files as they were)"

    element = tmp_path / "element" / "config.json"
    element.write_text(element.read_text().replace('"brand": "Memu"', '"brand": "Okafors"'))
    changed = stack_config.apply(stack_config.Settings("memu.local", language="de-DE",
                                                       timezone="Europe/Berlin"), tmp_path)
    assert changed.kept == ("element/config.json",)
    assert set(changed.updated) == {"stack.env", "intelligence/bot.env"}
    assert '"brand": "Okafors"' in element.read_text() and element_language(tmp_path) == "en"
    assert element_language(tmp_path, "element/config.json.memu-new") == "de-DE"
    assert config_files.edited(tmp_path) == ["element/config.json"]
    assert "kept 1 edited files as they are (element/config.json;" in changed.summary()
    # The admin has seen the new version and keeps theirs: not offered again ...
    (tmp_path / "element/config.json.memu-new").unlink()
    seen = stack_config.apply(stack_config.Settings("memu.local", language="de-DE",
                                                    timezone="Europe/Berlin"), tmp_path)
    assert seen.kept == ("element/config.json",) and config_files.edited(tmp_path) == []
    # ... until the box has a newer one.
    newer = stack_config.apply(stack_config.Settings("memu.local", language="fr",
                                                     timezone="Europe/Berlin"), tmp_path)
    assert newer.kept == ("element/config.json",)
    assert element_language(tmp_path, "element/config.json.memu-new") == "fr"
    # The admin merges by hand (here: takes the box's version): nothing is kept any more.
    (tmp_path / "element/config.json.memu-new").replace(element)
    merged = stack_config.apply(stack_config.Settings("memu.local", language="fr",
                                                      timezone="Europe/Berlin"), tmp_path)
    assert merged.kept == () and config_files.edited(tmp_path) == []


def test_a_power_cut_while_writing_is_not_taken_for_an_edit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new version is recorded before it is written: cut between the two, the old
    content is still the box's own, so the next run updates the file instead of keeping it."""
    stack_config.apply(stack_config.Settings("memu.local"), tmp_path)
    write = config_files.write_atomic

    def cut(path: Path, data: bytes, **kw: int) -> None:
        if path.name == "config.json":
            raise OSError("power cut")
        write(path, data, **kw)

    monkeypatch.setattr(config_files, "write_atomic", cut)
    with pytest.raises(OSError):
        stack_config.apply(stack_config.Settings("memu.local", language="fr"), tmp_path)
    monkeypatch.setattr(config_files, "write_atomic", write)
    after = stack_config.apply(stack_config.Settings("memu.local", language="fr"), tmp_path)
    assert after.updated == ("element/config.json",) and after.kept == ()
    assert element_language(tmp_path) == "fr"
