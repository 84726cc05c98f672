"""Typed keys of the agent's aiohttp app that more than one route module reads."""

from __future__ import annotations

from aiohttp import web

from memu_agent.config import AgentConfig

CONFIG = web.AppKey("memu_agent.config", AgentConfig)
