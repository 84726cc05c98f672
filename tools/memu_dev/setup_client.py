"""The first-boot page driven as a browser without JavaScript drives it (urllib with a cookie
jar): for the QEMU tests and ``just bench-setup``.

The steps a person takes: open ``/`` (the page hands out its CSRF token and cookie), send the
form with the setup code read off the box's screen, follow the redirect to the progress
page, and wait until it says done (or failed). See ``memu_agent.setup_pages``.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memu_common import MemuError

#: A family's answers, as the tests type them.
FAMILY = {"family_name": "The Okafors", "admin_username": "ada",
          "admin_password": "purple-kettle-sings", "admin_password_confirm": "purple-kettle-sings",
          "timezone": "Europe/London", "language": "en-GB", "tailscale_auth_key": ""}


#: The console greeting the agent writes (memu_agent.console), read through the guest's shell.
GREETING = "/run/issue.d/50-memu.issue"


def code_on_screen(greeting: str) -> str:
    """The setup code in the console's greeting (``/run/issue.d/50-memu.issue``), as the
    person in front of the box reads it.

    Raises:
        MemuError: the greeting shows no setup code (the box is set up, or not ready).
    """
    found = re.search(r"Setup code: (\S+)", greeting)
    if found is None:
        raise MemuError("the console greeting shows no setup code")
    return found.group(1)


@dataclass
class SetupResult:
    """How a setup went: ``seconds`` from sending the form to the end, the last progress
    (``/api/setup``: ``state`` and ``steps``)."""

    seconds: float
    progress: dict[str, Any]

    @property
    def done(self) -> bool:
        return self.progress.get("state") == "done"

    def shares(self) -> dict[str, float]:
        """Each step's seconds as a share of the steps' sum (for the benchmark)."""
        steps = {s["name"]: float(s["seconds"] or 0.0) for s in self.progress["steps"]}
        total = sum(steps.values()) or 1.0
        return {name: secs / total for name, secs in steps.items()}


class Browser:
    """One browser (one cookie jar) on the box at ``base`` (``http://host:port``)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, path: str, form: Mapping[str, str] | None = None,
                timeout: float = 60) -> tuple[int, str, str]:
        """GET (or POST ``form`` url-encoded), following redirects; (status, final URL,
        body). HTTP errors are returned, not raised; OSError when the box does not answer."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=timeout) as r:
                return int(r.status), r.geturl(), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return int(e.code), e.geturl(), e.read().decode("utf-8", "replace")

    def csrf(self, page: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        if not found:
            raise MemuError("the page has no CSRF token field")
        return found.group(1)

    def progress(self) -> dict[str, Any]:
        status, _, body = self.request("/api/setup", timeout=30)
        if status != 200:
            raise MemuError(f"/api/setup answered {status}: {body[:200]}")
        data: dict[str, Any] = json.loads(body)
        return data

    def wait_finished(self, deadline_s: float) -> dict[str, Any]:
        """Poll ``/api/setup`` (every 2 s, as the page refreshes) until it is not running.

        Raises:
            MemuError: still running after ``deadline_s`` seconds.
        """
        end = time.monotonic() + deadline_s
        progress: dict[str, Any] = {}
        while time.monotonic() < end:
            try:
                progress = self.progress()
            except (OSError, MemuError):
                progress = {}
            if progress.get("state") not in (None, "running"):
                return progress
            time.sleep(2)
        raise MemuError(f"setup still running after {deadline_s:.0f} s: {progress}")

    def set_up(self, code: str, answers: Mapping[str, str] = FAMILY,
               deadline_s: float = 1800) -> SetupResult:
        """Fill in and send the setup form with ``code``, then wait for the end.

        Raises:
            MemuError: the form was refused (the message has the page's errors), or the
                setup did not end within ``deadline_s``.
        """
        t0 = self.send(code, answers)
        progress = self.wait_finished(deadline_s)
        return SetupResult(time.monotonic() - t0, progress)

    def send(self, code: str, answers: Mapping[str, str] = FAMILY) -> float:
        """Open the page and send the setup form with ``code`` (the apply starts); return
        the monotonic time it was sent.

        Raises:
            MemuError: the form was refused (the message has the page's errors).
        """
        status, _, page = self.request("/")
        if status != 200:
            raise MemuError(f"the setup page answered {status}")
        t0 = time.monotonic()
        status, url, page = self.request("/setup", {**answers, "setup_code": code,
                                                    "csrf": self.csrf(page)})
        if not url.endswith("/setup/progress") and not url.endswith("/setup/ready"):
            errors = re.findall(r'<p class="error[^"]*"[^>]*>([^<]*)</p>', page)
            raise MemuError(f"the setup form was refused ({status}): {errors}")
        return t0

    def wait_step(self, name: str, state: str, deadline_s: float) -> dict[str, Any]:
        """Poll ``/api/setup`` every second until step ``name`` is in ``state``; return that
        progress.

        Raises:
            MemuError: the run ended first, or ``deadline_s`` passed.
        """
        end = time.monotonic() + deadline_s
        progress: dict[str, Any] = {}
        while time.monotonic() < end:
            progress = self.progress()
            if any(s["name"] == name and s["state"] == state for s in progress["steps"]):
                return progress
            if progress.get("state") != "running":
                raise MemuError(f"the setup ended before {name} was {state}: {progress}")
            time.sleep(1)
        raise MemuError(f"{name} not {state} after {deadline_s:.0f} s: {progress}")

    def retry(self, deadline_s: float = 1800) -> SetupResult:
        """Press Retry on the progress page and wait for the end."""
        _, _, page = self.request("/setup/progress")
        t0 = time.monotonic()
        self.request("/setup/retry", {"csrf": self.csrf(page)})
        progress = self.wait_finished(deadline_s)  # before the clock is read
        return SetupResult(time.monotonic() - t0, progress)
