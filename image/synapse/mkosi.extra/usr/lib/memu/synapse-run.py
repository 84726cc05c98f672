"""Synapse's main, started while PostgreSQL may still be starting.

Importing Synapse takes most of its start-up on a small CPU (tens of seconds under
emulation), and needs no database; so the stack starts Synapse together with PostgreSQL
(compose.yaml: no depends_on, a ``memu.needs`` label), this imports Synapse first, then waits
until the database Synapse is configured with (``database.args`` of the merged
/etc/synapse/*.yaml) accepts a login, then runs Synapse's own main(), exactly what
``python -m synapse.app.homeserver`` runs. Arguments are Synapse's. On the first start it
writes Synapse's signing key first (:mod:`synapse_signing_key`, beside this file), in this
process: one Python start fewer in the family's wait at setup.
"""

import sys
import time
from pathlib import Path

import psycopg2
import yaml
from synapse.app import homeserver
from synapse_signing_key import ensure_key

CONFIG_DIR = Path("/etc/synapse")
#: Where memu_firstboot.stack_config's ``signing_key_path`` points.
SIGNING_KEY = Path("/data/signing.key")
WAIT_S = 300.0
LOGIN_KEYS = ("host", "port", "user", "password", "dbname")


def database_args() -> dict:
    """The login part of ``database.args``; Synapse merges its config files' top-level keys
    in name order, so the last file naming ``database`` wins. Empty when the files cannot be
    read: then Synapse itself starts at once and says what is wrong with them."""
    args: dict = {}
    try:
        for path in sorted(CONFIG_DIR.glob("*.yaml")):
            config = yaml.safe_load(path.read_text())
            if isinstance(config, dict) and isinstance(config.get("database"), dict):
                args = config["database"].get("args") or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {k: v for k, v in args.items() if k in LOGIN_KEYS} if isinstance(args, dict) else {}


def wait_for_database(args: dict) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            psycopg2.connect(connect_timeout=3, **args).close()
            return
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline:
                sys.exit(f"synapse-run: the database did not accept a login within "
                         f"{WAIT_S:.0f} s: {str(e).strip()}")
            time.sleep(0.5)


if __name__ == "__main__":
    if ensure_key(SIGNING_KEY):
        print(f"synapse-run: generated {SIGNING_KEY}", flush=True)
    if args := database_args():
        wait_for_database(args)
    sys.argv[0] = homeserver.__file__
    homeserver.main()
