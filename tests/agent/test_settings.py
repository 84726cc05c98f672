"""memu_common.settings: the one table of settings rows the agent, updater and bot read."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import pytest

from memu_common import MemuError, settings
from memu_common.settings import Setting, check_table, read_environment, read_table


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Example:
    name: str = "memu"
    port: int = 80
    where: Path = Path("/var/lib/memu")
    colour: Colour = Colour.RED


TABLE = (
    Setting("name", settings.display_name, env="EX_NAME", required=True),
    Setting("port", settings.port),
    Setting("where", settings.abs_path),
    Setting("colour", settings.choice(Colour, "colour"), env="EX_COLOUR"),
)


def test_read_table_applies_good_values_and_reports_the_rest() -> None:
    got, problems = read_table(
        Example(), TABLE, {"name": "  Okafor box ", "port": 70000, "colur": "blue",
                           "where": "/srv/memu"}, "ex.toml")
    assert got == Example(name="Okafor box", where=Path("/srv/memu"))
    assert len(problems) == 2
    assert "ex.toml: key 'port': 70000 is out of range (0-65535); using the default 80" in (
        problems[0])
    assert "unknown key 'colur'" in problems[1] and "Known keys: name, port, where, colour" in (
        problems[1])


def test_check_table_catches_a_missing_row() -> None:
    check_table(Example, TABLE)
    with pytest.raises(AssertionError, match="do not match"):
        check_table(Example, TABLE[:3])
    with pytest.raises(AssertionError, match="twice"):
        check_table(Example, (*TABLE, TABLE[0]))
    check_table(Example, TABLE[:3], tables=["colour"])


def test_read_environment_reads_files_and_names_the_variable(tmp_path: Path) -> None:
    secret = tmp_path / "name"
    secret.write_text("From a file\n")
    assert read_environment(TABLE, {"EX_NAME_FILE": str(secret), "EX_COLOUR": "blue"}) == {
        "name": "From a file", "colour": Colour.BLUE}
    with pytest.raises(MemuError, match="EX_NAME is not set"):
        read_environment(TABLE, {})
    with pytest.raises(MemuError, match=r"EX_COLOUR='green' is not valid: 'green' is not a "
                                        r"colour \(use one of 'red', 'blue'\)"):
        read_environment(TABLE, {"EX_NAME": "x", "EX_COLOUR": "green"})
    with pytest.raises(MemuError, match="cannot read EX_NAME_FILE"):
        read_environment(TABLE, {"EX_NAME_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (settings.boolean, "yes", "must be true or false, not str"),
        (settings.listen_address, "localhost", "is not an IP address"),
        (settings.display_name, "a\x07b", "control characters"),
        (settings.seconds(60.0), 5, "too small"),
        (settings.positive(int), "0", "must be positive"),
        (settings.positive(int), True, "not true/false"),
        (settings.base_url, "https://u.example/os", "must end with '/'"),
        (settings.http_url, "ftp://u.example/", "not an http:// or https:// URL"),
        (settings.time_zone, "Mars/Olympus", "is not a time zone"),
        (settings.unit_names, ["docker"], "is not a unit name"),
        (settings.abs_paths, [], "non-empty list"),
    ],
)
def test_parsers_say_what_is_wrong(parse: settings.Parser, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(value)


def test_parsers_return_checked_values() -> None:
    assert settings.positive(float)("2.5") == 2.5
    assert settings.seconds(0.0)(3) == 3.0
    assert settings.abs_paths(["/a", "/b"]) == (Path("/a"), Path("/b"))
    assert settings.time_zone(" Europe/London ") == "Europe/London"
    assert settings.listen_address("::1") == "::1"
