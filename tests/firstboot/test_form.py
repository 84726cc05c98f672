"""memu_firstboot.form: the setup form's checks and what the page is pre-filled with."""

from __future__ import annotations

from pathlib import Path

import pytest

from memu_firstboot import form

GOOD = {
    "family_name": "  The Okafors ",
    "admin_username": "Ada.Okafor",
    "admin_password": "purple-kettle-sings-loudly",
    "admin_password_confirm": "purple-kettle-sings-loudly",
    "timezone": "Europe/London",
    "language": "en_gb",
    "tailscale_auth_key": "",
    "setup": "Set up",  # the button: ignored
}


def test_a_good_form_becomes_a_request_with_secrets_out_of_repr() -> None:
    request, errors = form.check({**GOOD, "tailscale_auth_key": " tskey-auth-k1 "})
    assert errors == {}
    assert request == form.SetupRequest(
        family_name="The Okafors", admin_username="ada.okafor",
        admin_password="purple-kettle-sings-loudly", timezone="Europe/London",
        language="en-GB", tailscale_auth_key="tskey-auth-k1")
    assert "purple" not in repr(request) and "tskey" not in repr(request)


def test_every_bad_field_gets_its_own_message() -> None:
    request, errors = form.check({
        "family_name": "", "admin_username": "ada okafor", "admin_password": "short",
        "timezone": "Mars/Olympus", "language": "english", "tailscale_auth_key": "abc"})
    assert request is None
    assert errors == {
        "family_name": "Please fill this in.",
        "admin_username": "Use only letters, digits, dots, dashes or underscores, no spaces "
                          "(at most 32), e.g. ada or ada.okafor.",
        "admin_password": "Please use at least 12 characters; a few words together are easy "
                          "to remember, e.g. purple-kettle-sings-loudly.",
        "timezone": "Please choose your time zone from the list.",
        "language": "Please choose your language from the list.",
        "tailscale_auth_key": "That does not look like a Tailscale auth key: copy the whole "
                              "key from the Tailscale admin console (Settings, Keys); it "
                              "starts with tskey-. Or leave it empty and set up remote access "
                              "later.",
    }


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"admin_username": "memu"}, "admin_username", "the assistant's name"),
        ({"admin_password_confirm": "purple-kettle-sings-loudlY"}, "admin_password_confirm",
         "not the same"),
        ({"admin_password": "abcabcabcabcabc", "admin_password_confirm": "abcabcabcabcabc"},
         "admin_password", "repeated"),
        ({"admin_password": "aaaabbbbaaaabbbb", "admin_password_confirm": "aaaabbbbaaaabbbb"},
         "admin_password", "more different characters"),
        ({"admin_password": "ada.okafor-rules!", "admin_password_confirm": "ada.okafor-rules!"},
         "admin_password", "user name or family name"),
        ({"admin_password": "x" * 129}, "admin_password", "at most 128"),
    ],
)
def test_weak_or_mismatched_passwords_and_reserved_names(
        change: dict[str, str], field: str, words: str) -> None:
    request, errors = form.check({**GOOD, **change})
    assert request is None and list(errors) == [field]
    assert words in errors[field]


def test_prefill_from_accept_language(tmp_path: Path) -> None:
    table = tmp_path / "zone1970.tab"
    table.write_text("# codes\tcoordinates\tTZ\tcomments\n"
                     "GB,GG,IM,JE\t+513030-0000731\tEurope/London\n"
                     "DE,DK,NO\t+5230+01322\tEurope/Berlin\n"
                     "DE\t+4742+00841\tEurope/Busingen\tBusingen\n")
    assert form.prefill("en-GB,en;q=0.8", table) == {
        "language": "en-GB", "timezone": "Europe/London"}
    # the highest q wins, whatever the order; a tag without a region keeps UTC
    assert form.prefill("fr;q=0.5, de-de;q=0.9", table) == {
        "language": "de-DE", "timezone": "Europe/Berlin"}
    assert form.prefill("sv", table) == {"language": "sv", "timezone": "Etc/UTC"}
    for useless in ("", "*", "en;q=0", "x-klingon", "en;q=abc"):
        assert form.prefill(useless, table) == {"language": "en", "timezone": "Etc/UTC"}
    # no tzdata table: the language still comes through
    assert form.prefill("nl-NL", tmp_path / "missing") == {
        "language": "nl-NL", "timezone": "Etc/UTC"}


def test_prefill_on_this_system_names_a_real_zone() -> None:
    if not form.ZONE_TABLE.exists():
        pytest.skip("no tzdata here")
    got = form.prefill("ja-JP")
    assert got["timezone"] == "Asia/Tokyo" and form.timezone(got["timezone"])
