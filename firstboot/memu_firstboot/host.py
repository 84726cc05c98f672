"""The host's own settings from the family's form, set by the first-boot apply's config step:
its clock's time zone (``timedatectl set-timezone``) and its pretty name (machine-info(5)
``PRETTY_HOSTNAME``, ``hostnamectl set-hostname --pretty``).

The host name stays ``memu``: ``memu.local`` is what the console, the QR code and the
family's bookmarks say, and the family's phone is on that page while this runs. The host's
locale stays ``C.UTF-8``: the image carries no other locale, and nothing on the host speaks
to the family (the pages, the chat client and the assistant take the language from their
configuration).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from memu_common.run import run_async

log = logging.getLogger("memu_firstboot.host")


def pretty_name(family_name: str) -> str:
    """The box's pretty host name for ``family_name``: ``Memu (The Okafors)``."""
    return f"Memu ({family_name})"


async def set_host(set_timezone: Sequence[str], set_pretty_name: Sequence[str],
                   timezone: str, family_name: str) -> str:
    """Set the host's time zone and pretty name with the given commands (the value is
    appended to each); what was done, in plain words ("time zone Europe/London; the box is
    Memu (The Okafors)").

    The services already have the zone from their configuration, so a command that fails is
    logged and said, never raised: the box's clock keeps its old zone, or its old name.
    """
    said = []
    zone = await run_async((*set_timezone, timezone), time_limit_s=60)
    if zone.returncode != 0:
        log.warning("cannot set the time zone %s: %s", timezone, zone.stderr_tail())
        said.append("the box's clock stays in its old time zone")
    else:
        said.append(f"time zone {timezone}")
    name = pretty_name(family_name)
    named = await run_async((*set_pretty_name, name), time_limit_s=60)
    if named.returncode != 0:
        log.warning("cannot set the box's pretty name: %s", named.stderr_tail())
    else:
        said.append(f"the box is {name}")
    return "; ".join(said)
