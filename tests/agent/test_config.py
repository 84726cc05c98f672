"""Config parsing: good, missing, malformed, wrong types, bad values -> defaults + a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from memu_agent.config import DEFAULT_CONFIG_PATH, AgentConfig, config_path, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_good_file_sets_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'host = "::1"\nport = 8080\ndevice_name = "  Okafor box "\n'
        'state_dir = "/srv/memu"\nissue_dir = "/tmp/issue.d"\nwatchdog = false\n',
    )
    config, problems = load_config(path)
    assert problems == []
    assert config == AgentConfig(
        host="::1",
        port=8080,
        device_name="Okafor box",
        state_dir=Path("/srv/memu"),
        issue_dir=Path("/tmp/issue.d"),
        watchdog=False,
    )


def test_defaults() -> None:
    config = AgentConfig()
    assert (config.host, config.port, config.device_name) == ("", 80, "memu")
    assert config.state_dir == Path("/var/lib/memu")
    assert config.issue_dir == Path("/run/issue.d")
    assert config.watchdog is True


def test_missing_default_file_is_silent(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope.toml") == (AgentConfig(), [])


def test_missing_explicit_file_is_reported(tmp_path: Path) -> None:
    config, problems = load_config(tmp_path / "nope.toml", explicit=True)
    assert config == AgentConfig()
    assert len(problems) == 1 and "nope.toml" in problems[0] and "no such file" in problems[0]


def test_malformed_toml_gives_defaults_and_says_what_to_do(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 8080\ndevice_name = memu\n")
    config, problems = load_config(path)
    assert config == AgentConfig()
    assert len(problems) == 1
    assert str(path) in problems[0]
    assert "not valid TOML" in problems[0]
    assert "line 2" in problems[0]
    assert "Fix the file" in problems[0]


@pytest.mark.parametrize(
    ("line", "key", "what"),
    [
        ('port = "80"', "port", "must be an integer, not str"),
        ("port = true", "port", "must be an integer, not bool"),
        ("port = 70000", "port", "70000 is out of range (0-65535)"),
        ("port = -1", "port", "-1 is out of range"),
        ("host = 0", "host", "must be a string"),
        ('host = "example.org"', "host", "is not an IP address"),
        ('device_name = ""', "device_name", "must be 1 to 63 characters"),
        ('device_name = "a\\u0007b"', "device_name", "control characters"),
        ('state_dir = "var/lib/memu"', "state_dir", "is not an absolute path"),
        ('watchdog = "yes"', "watchdog", "must be true or false"),
    ],
)
def test_bad_value_keeps_that_default_and_the_rest(
    tmp_path: Path, line: str, key: str, what: str
) -> None:
    path = write(tmp_path, f'{line}\nissue_dir = "/x/issue.d"\n')
    config, problems = load_config(path)
    assert getattr(config, key) == getattr(AgentConfig(), key)
    assert config.issue_dir == Path("/x/issue.d")  # the good key still applies
    assert len(problems) == 1
    message = problems[0]
    assert str(path) in message
    assert f"key {key!r}" in message
    assert what in message
    assert "using the default" in message


def test_unknown_key_is_reported_and_ignored(tmp_path: Path) -> None:
    config, problems = load_config(write(tmp_path, "prot = 8080\nport = 81\n"))
    assert config.port == 81
    assert len(problems) == 1
    assert "unknown key 'prot'" in problems[0] and "Known keys: host, port" in problems[0]


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.mkdir()  # a directory where the file should be
    config, problems = load_config(path)
    assert config == AgentConfig()
    assert "cannot read it" in problems[0]


def test_config_path_precedence() -> None:
    env = {"MEMU_AGENT_CONFIG": "/env.toml"}
    assert config_path("/cli.toml", env) == (Path("/cli.toml"), True)
    assert config_path(None, env) == (Path("/env.toml"), True)
    assert config_path(None, {}) == (DEFAULT_CONFIG_PATH, False)
