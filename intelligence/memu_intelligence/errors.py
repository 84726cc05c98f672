"""How the bot fails. Two kinds, told apart by who can fix them:

- ``UserFacingError``: the person's input was not usable (unknown command, empty text,
  unparseable time, message too long). Its message is sent back to the room as is.
- ``MemuError`` (from memu_common) for set-up problems that stop the bot from starting
  (bad configuration, database unreachable at start-up), with a hint for the operator.

Database failures while serving are not wrapped: the dispatcher catches ``psycopg.Error``
and pool timeouts, logs them and apologises in the room (see ``callbacks.py``).
"""

from __future__ import annotations

from memu_common import MemuError

__all__ = ["MemuError", "UserFacingError"]


class UserFacingError(Exception):
    """Input the bot cannot act on; ``str(err)`` is a helpful reply for the room."""
