"""Reading the streamed JSON answers of the HTTP APIs the box downloads through: Docker's
Engine API (``POST /images/create``) and Ollama's (``POST /api/pull``) both answer with one
JSON object per line, and with a JSON object naming the error when they refuse."""

from __future__ import annotations

import json
from typing import Any


def event(line: bytes) -> dict[str, Any]:
    """One streamed line as an object; {} for a line that is not a JSON object."""
    try:
        obj = json.loads(line)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def refusal(body: str, key: str, default: str = "") -> str:
    """The error an API gave in ``body`` (``{key: "..."}``: Docker's "message", Ollama's
    "error"); ``default`` when the object lacks it, the body's start when it is not JSON."""
    try:
        return str(json.loads(body).get(key, default))
    except (ValueError, AttributeError):
        return body.strip()[:300]
