"""The two signing keys a Memu OS build needs, kept outside the repository.

- The **build key** (X.509, RSA) signs the dm-verity root hash of each `/usr` slot
  (mkosi ``VerityKey=``/``VerityCertificate=``). From ``MEMU_VERITY_KEY`` and
  ``MEMU_VERITY_CERT``, else a development pair generated once under ``keys/dev/``.
- The **release key** (OpenPGP, Ed25519) signs a channel's ``SHA256SUMS``; its public half
  ships in the image as ``/usr/lib/systemd/import-pubring.gpg``, where systemd-sysupdate
  looks for it (sysupdate.d(5)). From the GnuPG home ``MEMU_RELEASE_GNUPGHOME``, else a
  development key generated once under ``keys/dev/release-gnupg``.

Development keys are for development only: every build that uses one says so loudly, and
they are never used for releases anyone else installs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from memu_common import MemuError, run
from memu_dev.paths import OUTPUT, REPO

log = logging.getLogger("memu.keys")

DEV_DIR = REPO / "keys" / "dev"
DEV_UID = "Memu OS development release key (NOT FOR PRODUCTION)"
LOUD = "*" * 78


@dataclass(frozen=True)
class BuildKeys:
    """Paths to the keys one build uses.

    Attributes:
        verity_key: PEM private key that signs the verity root hash.
        verity_cert: PEM certificate for it.
        gnupghome: GnuPG home holding the release signing key.
        pubring_tree: a tree with usr/lib/systemd/import-pubring.gpg, for mkosi ExtraTrees.
        development: True when any of them is a generated development key.
    """

    verity_key: Path
    verity_cert: Path
    gnupghome: Path
    pubring_tree: Path
    development: bool


def _dev_verity_pair() -> tuple[Path, Path]:
    key, crt = DEV_DIR / "verity.key", DEV_DIR / "verity.crt"
    if not (key.exists() and crt.exists()):
        DEV_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes",
             "-days", "3650", "-subj", "/CN=Memu OS development build key",
             "-keyout", key, "-out", crt], hint="is openssl installed?")
        key.chmod(0o600)
    return key, crt


def _dev_gnupghome() -> Path:
    home = DEV_DIR / "release-gnupg"
    if not (home / "pubring.kbx").exists() or not _has_secret_key(home):
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
             "--passphrase", "", "--quick-gen-key", DEV_UID, "ed25519", "sign", "never"],
            hint="is gpg installed?")
    return home


def _has_secret_key(home: Path) -> bool:
    out = run(["gpg", "--homedir", home, "--batch", "--list-secret-keys", "--with-colons"],
              check=False).stdout
    return "sec:" in out


def export_pubring(gnupghome: Path, dest_tree: Path) -> Path:
    """Write the release public key(s) in binary form where systemd-sysupdate looks.

    Returns:
        The path of ``<dest_tree>/usr/lib/systemd/import-pubring.gpg``.
    """
    dest = dest_tree / "usr/lib/systemd/import-pubring.gpg"
    dest.parent.mkdir(parents=True, exist_ok=True)
    listed = run(["gpg", "--homedir", gnupghome, "--batch", "--list-keys", "--with-colons"],
                 check=False).stdout
    if "pub:" not in listed:
        raise MemuError(f"no public key in {gnupghome}",
                        hint="set MEMU_RELEASE_GNUPGHOME to a GnuPG home with the release key")
    run(["gpg", "--homedir", gnupghome, "--batch", "--yes", "--export", "--output", dest])
    return dest


def build_keys() -> BuildKeys:
    """Find (or, for development, create) the keys for a build; says loudly if dev keys.

    Raises:
        MemuError: configured key files are missing, or a tool failed.
    """
    dev = False
    env_key, env_crt = os.environ.get("MEMU_VERITY_KEY"), os.environ.get("MEMU_VERITY_CERT")
    if env_key and env_crt:
        key, crt = Path(env_key), Path(env_crt)
        for p in (key, crt):
            if not p.exists():
                raise MemuError(f"{p} does not exist", hint="check MEMU_VERITY_KEY/CERT")
    else:
        key, crt = _dev_verity_pair()
        dev = True
    env_home = os.environ.get("MEMU_RELEASE_GNUPGHOME")
    if env_home:
        home = Path(env_home)
    else:
        home = _dev_gnupghome()
        dev = True
    tree = OUTPUT / "release-key-tree"
    export_pubring(home, tree)
    if dev:
        log.warning("%s\nmemu: THIS BUILD USES DEVELOPMENT KEYS from %s.\n"
                    "memu: Images and releases signed with them are for development only.\n"
                    "memu: Set MEMU_VERITY_KEY, MEMU_VERITY_CERT and MEMU_RELEASE_GNUPGHOME "
                    "for real releases.\n%s", LOUD, DEV_DIR, LOUD)
    return BuildKeys(key, crt, home, tree, dev)
