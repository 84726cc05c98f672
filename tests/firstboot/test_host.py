"""The apply's configuration step on the host's side: the family's time zone and the box's
pretty name are handed to the host's own commands (timedatectl, hostnamectl; here scripts
that record their arguments), the family's language reaches the chat client, and a command
that refuses is said in the step, never a failed setup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from firstboot_fixtures import recorder, script

from memu_firstboot import apply, progress
from memu_firstboot.form import SetupRequest


async def run_config_step(tmp_path: Path, box: apply.Box) -> tuple[bool, dict[str, Any]]:
    """Run the apply's config step alone on ``box`` for the Okafors' form; whether it
    passed, and its progress entry."""
    (tmp_path / "state").mkdir()
    form = SetupRequest("The Okafors", "ada", "purple-kettle-sings", "Europe/Berlin", "de-DE")
    steps = [s for s in apply.STEPS if s.name == "config"]
    prog = progress.Progress(tmp_path / "state" / progress.PROGRESS_FILE, steps)
    async with aiohttp.ClientSession() as session:
        run = apply.Run(box, apply.StoredRequest(form, "memu.local"), session)
        ok = await progress.run_steps(run, steps, prog)
    return ok, prog.body["steps"][0]


@pytest.mark.parametrize("refuses", [False, True])
async def test_the_config_step_sets_up_the_host(tmp_path: Path, refuses: bool) -> None:
    log = tmp_path / "host-commands"
    box = apply.Box(state_dir=tmp_path / "state", config_dir=tmp_path / "config",
                    set_timezone=(*recorder(tmp_path / "tz", log, 1 if refuses else 0),
                                  "set-timezone"),
                    set_pretty_name=(*recorder(tmp_path / "name", log, 0), "--pretty"))
    ok, step = await run_config_step(tmp_path, box)
    assert ok
    assert step["state"] == "done"
    assert log.read_text().splitlines() == ["set-timezone Europe/Berlin",
                                            "--pretty Memu (The Okafors)"]
    assert step["message"].startswith("server memu.local: wrote ")
    if refuses:
        assert step["message"].endswith(
            "the box's clock stays in its old time zone; the box is Memu (The Okafors)")
    else:
        assert step["message"].endswith("time zone Europe/Berlin; the box is Memu (The Okafors)")
    element = json.loads((tmp_path / "config" / "element" / "config.json").read_text())
    assert element["setting_defaults"]["language"] == "de-DE"


async def test_a_failed_deploy_is_what_the_step_says_even_when_the_host_fails_too(
        tmp_path: Path) -> None:
    """The host's commands run beside the deploy; when both fail, the family reads the
    deploy's failure (the configuration), not the host's."""
    pyinfra = script(tmp_path / "pyinfra",
                     '#!/bin/sh\necho "--> pyinfra error: the disk is full"\nexit 1\n')
    box = apply.Box(state_dir=tmp_path / "state", config_dir=tmp_path / "config",
                    pyinfra=pyinfra,
                    set_timezone=(str(tmp_path / "no-timedatectl"), "set-timezone"),
                    set_pretty_name=(str(tmp_path / "no-hostnamectl"), "--pretty"))
    ok, step = await run_config_step(tmp_path, box)
    assert not ok
    assert step["state"] == "failed"
    assert step["message"].startswith("writing the configuration failed"), step["message"]
