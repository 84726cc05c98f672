"""Typed keys of the agent's aiohttp app that more than one route module reads."""

from __future__ import annotations

from aiohttp import web

from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths

CONFIG = web.AppKey("memu_agent.config", AgentConfig)
PATHS = web.AppKey("memu_agent.paths", HostPaths)
