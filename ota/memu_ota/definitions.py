"""Render the shipped sysupdate transfer templates for the configured channel.

The image ships ``/usr/lib/memu/sysupdate.d/*.transfer.in``: ordinary sysupdate.d(5)
transfer files whose ``[Source] Path=`` holds the placeholder ``@SOURCE_URL@``. This module
writes ``<runtime_dir>/sysupdate.d/<name>.transfer`` with the placeholder replaced by the
channel URL (``<base_url><channel>/``), ``@IMAGE_NAME@`` (what the box's artifacts are
named after: ``memu-os``, or ``memu-os-hailo`` for the hailo variant, so that a channel
holding both hands each box its own; memu_common.osrelease) and ``@BOOT_TRIES@`` (the
UKI's ``TriesLeft=``, systemd-boot's boot counting) by the configured number of tries; the
agent always runs sysupdate with ``--definitions=<runtime_dir>/sysupdate.d``. Each file is
replaced atomically and stale ``*.transfer`` files are removed, so sysupdate never sees half a set.

:func:`render_local` writes the same transfers for a directory on the box instead: the
artifacts a delta update rebuilt (memu_ota.delta), uncompressed and already checked against
the channel's signed ``SHA256SUMS``, installed by the same sysupdate run from a ``file://``
URL.
"""

from __future__ import annotations

import re
from pathlib import Path

from memu_common import MemuError, osrelease
from memu_common.files import write_atomic
from memu_common.settings import base_url as parse_base_url
from memu_ota.config import parse_channel

PLACEHOLDER = "@SOURCE_URL@"
TRIES_PLACEHOLDER = "@BOOT_TRIES@"
IMAGE_PLACEHOLDER = "@IMAGE_NAME@"
TEMPLATE_SUFFIX = ".transfer.in"


def source_url(base_url: str, channel: str) -> str:
    """The channel directory URL, after checking both parts.

    Raises:
        MemuError: the base URL or channel is not valid.
    """
    try:
        base = parse_base_url(base_url)
        chan = parse_channel(channel)
    except ValueError as e:
        raise MemuError(
            f"update source is not valid: {e}",
            hint='use an http(s) base URL ending in "/" and channel "stable" or "beta"',
        ) from e
    return f"{base}{chan}/"


def render(template_dir: Path, out_dir: Path, base_url: str, channel: str,
           boot_tries: int = 3, image_name: str = osrelease.IMAGE_ID) -> list[Path]:
    """Render every ``*.transfer.in`` in ``template_dir`` into ``out_dir``.

    Args:
        boot_tries: how many times a new version's boot entry is tried before systemd-boot
            falls back (replaces ``@BOOT_TRIES@``; see systemd.io/AUTOMATIC_BOOT_ASSESSMENT).
        image_name: what the box's artifacts are named after (replaces ``@IMAGE_NAME@``;
            :attr:`memu_ota.config.OtaConfig.image_name`).

    Returns:
        The written ``*.transfer`` paths, sorted.

    Raises:
        MemuError: bad URL or channel, no templates, a template without the placeholder,
            or the output directory cannot be written.
    """
    url = source_url(base_url, channel)
    return _write(out_dir, {name: _fill(text, url, boot_tries, image_name)
                            for name, text in _templates(template_dir).items()})


def render_local(template_dir: Path, out_dir: Path, directory: Path,
                 boot_tries: int = 3, image_name: str = osrelease.IMAGE_ID) -> list[Path]:
    """Render the templates for the local channel ``directory`` (absolute), as
    :func:`render` does for a remote one, with two changes: ``Path=file://<directory>/``,
    and each source ``MatchPattern=`` for a ``.raw.gz`` artifact matches the uncompressed
    ``.img`` file instead. ``Verify=yes`` stays: the directory holds the remote channel's
    signed ``SHA256SUMS`` and signature, which list the ``.img`` files too, so sysupdate
    checks the signature and every file as it does for a remote channel.

    Raises:
        MemuError: as :func:`render`.
    """
    url = f"file://{directory.absolute()}/"
    rendered = {}
    for name, text in _templates(template_dir).items():
        text = _fill(text, url, boot_tries, image_name)
        rendered[name] = re.sub(r"^(MatchPattern=\S+)\.raw\.gz$", r"\1.img", text,
                                flags=re.MULTILINE)
    return _write(out_dir, rendered)


def _fill(text: str, url: str, boot_tries: int, image_name: str) -> str:
    """A template's text with its placeholders replaced."""
    return (text.replace(PLACEHOLDER, url).replace(TRIES_PLACEHOLDER, str(boot_tries))
            .replace(IMAGE_PLACEHOLDER, image_name))


def _templates(template_dir: Path) -> dict[str, str]:
    """``<name>.transfer`` -> the text of ``<name>.transfer.in``, for every template.

    Raises:
        MemuError: no templates, or one without the placeholder.
    """
    templates = sorted(template_dir.glob(f"*{TEMPLATE_SUFFIX}"))
    if not templates:
        raise MemuError(
            f"no update definitions found in {template_dir} (*{TEMPLATE_SUFFIX})",
            hint="this image was built without OTA support; updates are off",
        )
    texts: dict[str, str] = {}
    for template in templates:
        text = template.read_text("utf-8")
        if PLACEHOLDER not in text:
            raise MemuError(
                f"{template} has no {PLACEHOLDER}; refusing to use it",
                hint="the image's transfer templates are broken; rebuild the image",
            )
        texts[template.name.removesuffix(TEMPLATE_SUFFIX) + ".transfer"] = text
    return texts


def _write(out_dir: Path, rendered: dict[str, str]) -> list[Path]:
    """Write ``rendered`` (name -> text) into ``out_dir`` and remove other ``*.transfer``
    files; return the written paths, sorted.

    Raises:
        MemuError: the directory cannot be written.
    """
    try:
        out_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, text in rendered.items():
            write_atomic(out_dir / name, text.encode("utf-8"), mode=0o644, dir_mode=0o755)
        for old in out_dir.glob("*.transfer"):
            if old.name not in rendered:
                old.unlink()
    except OSError as e:
        raise MemuError(
            f"cannot write update definitions to {out_dir}: {e.strerror or e}",
            hint="the agent needs RuntimeDirectory=memu",
        ) from e
    return sorted(out_dir / name for name in rendered)
