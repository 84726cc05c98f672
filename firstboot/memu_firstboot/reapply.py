"""The family stack's configuration again, on the first boot of every OS version.

    python3 -m memu_firstboot.reapply --version VERSION [--config DIR] [--state-dir DIR]

A new OS version may render the configuration differently (a new template, a new service's
file) and a rollback brings the old rendering back, so ``memu-config-apply.service`` runs
this before the stack starts, on every boot of a set-up box; it does the work only when the
booted version (systemd's ``%A``, ``IMAGE_VERSION`` of os-release(5)) is not the one the
configuration was last rendered for. It renders from the family's settings saved at setup
(:func:`save_settings`, ``<config>/settings.json``: the setup form's values; the Tailscale key
stays in the stack's secrets) by the rule of :mod:`memu_firstboot.config_files`: a file the
family or an operator edited is kept, and the box's new version is written beside it and
shown on ``/admin``. Secrets a new version needs are made; existing ones are kept.

What happened is recorded in ``<state_dir>/config-applied.json``::

    {"version": "0.2.0", "at": 1764800000.0, "summary": "wrote 2 files",
     "history": [{"version": ..., "at": ..., "summary": ...}, ...]}   # newest last

Exit status: 0 when the configuration is the booted version's (or the box is not set up),
1 when it could not be rendered (the stack then starts on the configuration it has; the
journal and ``/admin`` say why).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from memu_common import MemuError
from memu_common.files import read_json_object, write_atomic, write_json_atomic
from memu_firstboot import stack_config
from memu_firstboot.config_files import Applied
from memu_firstboot.run_deploy import PYINFRA, run_deploy
from memu_firstboot.state import STATE_DIR, SetupState, setup_state

log = logging.getLogger(__name__)

#: The family's settings from the setup form, in the stack's configuration directory.
SETTINGS_FILE = "settings.json"
#: What the last renders did, in the agent's state directory.
RECORD_FILE = "config-applied.json"
#: How many renders the record keeps.
HISTORY = 10


def save_settings(settings: stack_config.Settings, config_dir: Path) -> Path:
    """Save ``settings`` as ``<config_dir>/settings.json`` (0600) for the deploy and later
    renders; the Tailscale auth key, when given, goes with the secrets instead
    (``secrets/tailscale-authkey``, 0600).

    Raises:
        OSError: it cannot be written.
    """
    data = dataclasses.asdict(settings)
    del data["tailscale_auth_key"]
    data["optional"] = dict(settings.optional)
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if settings.tailscale_auth_key:
        write_atomic(config_dir / stack_config.TAILSCALE_KEY,
                     settings.tailscale_auth_key.encode() + b"\n", mode=0o600, dir_mode=0o755)
    path = config_dir / SETTINGS_FILE
    write_json_atomic(path, data, mode=0o600)
    return path


def load_settings(config_dir: Path) -> stack_config.Settings:
    """The settings :func:`save_settings` saved, with the Tailscale key from the secrets.

    Raises:
        FileNotFoundError: there is none.
        MemuError: they are unreadable or not valid (:func:`parse_settings`).
    """
    path = config_dir / SETTINGS_FILE
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        raise MemuError(f"{path} is unreadable: {e}",
                        hint="restore it from its last good content or set the box up "
                             "again") from e
    try:
        key = (config_dir / stack_config.TAILSCALE_KEY).read_text("utf-8").strip()
    except FileNotFoundError:
        key = ""
    return parse_settings(text, key, str(path))


def parse_settings(text: str, tailscale_auth_key: str, where: str) -> stack_config.Settings:
    """The settings from the JSON ``text`` of a settings file (``where``, for messages) and
    the Tailscale key kept in the secrets ("" for none).

    Raises:
        MemuError: ``text`` is not JSON, or holds a value the setup form would refuse (the
            message names it).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MemuError(f"{where} is unreadable: {e}",
                        hint="restore it from its last good content or set the box up "
                             "again") from e
    if not isinstance(data, dict):
        raise MemuError(f"{where} is not a JSON object", hint="restore its last good content")
    names = {f.name for f in dataclasses.fields(stack_config.Settings)} - {"tailscale_auth_key"}
    unknown = sorted(set(data) - names)
    if unknown or "server_name" not in data:
        raise MemuError(f"{where}: unknown keys {unknown} or no server_name",
                        hint=f"the keys are {', '.join(sorted(names))}")
    try:
        return stack_config.Settings(**data, tailscale_auth_key=tailscale_auth_key)
    except (TypeError, ValueError) as e:  # a value of the wrong type
        raise MemuError(f"{where}: {e}", hint="restore its last good content") from e


def last_render(state_dir: Path) -> dict[str, object] | None:
    """The last render's record (``version``, ``at``, ``summary``, ``history``), or None."""
    return read_json_object(state_dir / RECORD_FILE)


def _record(state_dir: Path, version: str, summary: str) -> None:
    old = last_render(state_dir) or {}
    history = old.get("history")
    entry = {"version": version, "at": time.time(), "summary": summary}
    kept = [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []
    write_json_atomic(state_dir / RECORD_FILE,
                      {**entry, "history": [*kept, entry][-HISTORY:]}, mode=0o644)


def reapply(version: str, config_dir: Path, state_dir: Path,
            pyinfra: Sequence[str] = PYINFRA) -> Applied | None:
    """Render the configuration for the booted ``version`` unless it was rendered for it
    last (or the box is not set up, or has no saved settings); return what was done, or None
    when nothing ran.

    The configuration is written by the pyinfra deploy (:mod:`memu_firstboot.deploy`, run
    with ``pyinfra``), which also makes the secrets a new version needs.

    Raises:
        MemuError: the saved settings cannot be read (nothing was changed), or the deploy
            failed.
        OSError: the record cannot be written.
    """
    if setup_state(state_dir) is not SetupState.DONE:
        return None
    last = last_render(state_dir)
    if last and last.get("version") == version:
        return None
    try:
        load_settings(config_dir)  # a clear error before pyinfra starts
    except FileNotFoundError:
        log.warning("memu: %s is missing: the configuration stays as it is",
                    config_dir / SETTINGS_FILE)
        return None
    applied = asyncio.run(run_deploy(config_dir, pyinfra=pyinfra))
    _record(state_dir, version, applied.summary())
    return applied


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring for the exit status)."""
    ap = argparse.ArgumentParser(prog="memu-config-apply", description=__doc__.split("\n")[0])
    ap.add_argument("--version", required=True, help="the booted OS version (systemd's %%A)")
    ap.add_argument("--config", type=Path, default=stack_config.CONFIG_DIR)
    ap.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        applied = reapply(args.version, args.config, args.state_dir)
    except MemuError as e:
        log.error("memu: cannot render the configuration for %s: %s", args.version, e)
        return 1
    if applied is None:
        log.info("memu: the configuration is already this version's (%s)", args.version)
    else:
        log.info("memu: the configuration for %s: %s", args.version, applied.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
