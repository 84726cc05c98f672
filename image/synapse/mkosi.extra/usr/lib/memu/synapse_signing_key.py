"""Write Synapse's signing key when the file is missing or empty, as Synapse's own
``--generate-keys`` does (synapse/config/key.py: key ID ``a_`` and four random letters, an
ed25519 key written by signedjson in its ``ed25519 <key id> <seed>`` line format), without
a second run of Synapse: ``--generate-keys`` loads all of it and exits, tens of seconds on a
small CPU at the chat server's first start; synapse-run.py calls :func:`ensure_key` in the
process that then runs Synapse. Written whole or not at all (a temporary file, fsync,
rename, fsync of the directory: a power cut must not give the server a new key ID), mode
0600.
"""

import os
import secrets
import string
from pathlib import Path

from signedjson.key import generate_signing_key, write_signing_keys


def ensure_key(path: Path) -> bool:
    """Write a new signing key to ``path`` unless it holds one; True when it wrote one."""
    if path.exists() and path.stat().st_size > 0:
        return False
    key_id = "a_" + "".join(secrets.choice(string.ascii_letters) for _ in range(4))
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        write_signing_keys(f, [generate_signing_key(key_id)])
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True

