"""The family stack's configuration as a pyinfra deploy: the same on the box and from a laptop.

On the box (what the setup's configuration step and ``memu-config-apply.service`` run, as a
child process: pyinfra patches the process with gevent)::

    pyinfra -y @local /usr/lib/python3/dist-packages/memu_firstboot/stack_deploy.py

From an operator's laptop with this package and pyinfra 3.5 installed::

    pyinfra -y root@memu.local .../memu_firstboot/stack_deploy.py

(``stack_deploy.py`` is the deploy file: it calls :func:`deploy`.)

Data (``--data KEY=VALUE``): ``memu_config_dir``, the configuration's directory on the
target (default ``/etc/memu/stack``).

It reads the family's settings from the target (``settings.json``, saved by the setup:
:mod:`memu_firstboot.reapply`), the secrets there (those missing are made here and written,
0600, never printed), renders every file (:func:`memu_firstboot.stack_config.render`) and
writes them by the rule of :mod:`memu_firstboot.config_files`: a file someone edited is kept
and the box's version goes beside it; a second run changes nothing. Files are written
atomically (to ``<file>.memu-tmp``, synced, then renamed): a power cut leaves the old file
or the new one, never half of one. What it comes to is printed as one line for the setup's
progress page::

    memu-applied {"made": [...], "updated": [...], "same": [...], "kept": [...]}

pyinfra: https://docs.pyinfra.com/en/3.x/ (facts ``files.File``, ``files.Sha256File``,
``files.FileContents``; operations ``files.directory``, ``files.put``, ``files.file``,
``server.shell``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
from pathlib import PurePosixPath

from pyinfra.context import host
from pyinfra.facts.files import File, FileContents, Sha256File
from pyinfra.operations import files, server

from memu_common import MemuError
from memu_firstboot import config_files, reapply, stack_config
from memu_firstboot.run_deploy import RESULT


def _contents(path: PurePosixPath) -> str | None:
    """A text file's content on the target, or None when there is none."""
    if not host.get_fact(File, path=str(path)):
        return None
    lines = host.get_fact(FileContents, path=str(path))
    return None if lines is None else "\n".join(lines)


def _found(config: PurePosixPath, rel: str) -> config_files.Found:
    path = config / rel
    info = host.get_fact(File, path=str(path))
    beside = bool(host.get_fact(File, path=f"{path}{config_files.NEW_SUFFIX}"))
    if not info:
        return config_files.Found(beside=beside)
    digest = host.get_fact(Sha256File, path=str(path))
    return config_files.Found(digest, int(str(info["mode"]), 8), beside)


def _write(config: PurePosixPath, rel: str, data: bytes, mode: int, made: set[str]) -> None:
    """Write one file atomically: to a temporary name, synced, then renamed over it; its
    directories below ``config`` are made 0755 (the containers' users read them) unless
    ``made`` has them already."""
    path = config / rel
    tmp = f"{path}.memu-tmp"
    for parent in reversed(path.relative_to(config).parents[:-1]):
        if str(parent) not in made:
            made.add(str(parent))
            files.directory(name=f"directory {parent}", path=str(config / parent),
                            mode="755", present=True)
    files.put(name=f"write {rel}", src=io.BytesIO(data), dest=tmp, mode=f"{mode:o}",
              force=True)
    server.shell(name=f"put {rel} in place",
                 commands=[f"sync {shlex.quote(tmp)}",
                           f"mv -f {shlex.quote(tmp)} {shlex.quote(str(path))}",
                           f"sync {shlex.quote(str(path.parent))}"])


def deploy() -> None:
    """Plan and queue the operations (pyinfra runs them after this returns).

    Raises:
        MemuError: the target has no saved settings, or they are not valid.
    """
    config = PurePosixPath(host.data.get("memu_config_dir") or str(stack_config.CONFIG_DIR))
    text = _contents(config / reapply.SETTINGS_FILE)
    if text is None:
        raise MemuError(f"{config / reapply.SETTINGS_FILE} is missing on the target",
                        hint="set the box up first: the setup saves the family's settings")
    key = _contents(config / stack_config.TAILSCALE_KEY)
    settings = reapply.parse_settings(text, key.strip() if key else "",
                                      str(config / reapply.SETTINGS_FILE))
    secret = stack_config.fill_secrets(
        {name: (_contents(config / "secrets" / name) or "").strip()
         for name in stack_config.SECRET_NAMES})
    rendered = stack_config.render(settings, secret)
    found = {rel: _found(config, rel) for rel in rendered}
    record_text = _contents(config / config_files.WRITTEN_RECORD)
    todo = config_files.plan(rendered, found, config_files.parse_record(record_text))
    files.directory(name="the configuration's directory", path=str(config), mode="700",
                    present=True)
    made: set[str] = set()
    if todo.record is not None:  # before the files: see memu_firstboot.config_files
        _write(config, config_files.WRITTEN_RECORD,
               json.dumps(todo.record, indent=1, sort_keys=True).encode() + b"\n", 0o600, made)
    for rel, data, mode in todo.writes:
        _write(config, rel, data, mode, made)
    for rel, mode in todo.chmods:
        server.shell(name=f"mode of {rel}", commands=[f"chmod {mode:o} "
                                                        f"{shlex.quote(str(config / rel))}"])
    for rel in todo.removes:
        files.file(name=f"remove {rel}", path=str(config / rel), present=False)
    print(RESULT + json.dumps(dataclasses.asdict(todo.applied)), flush=True)

