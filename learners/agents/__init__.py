"""The agents, each one record of shared parts (see `registry.Agent`). Importing this package
registers the built-in agents; `get_agent(name)` returns a record, `register` adds one."""

from rillet.learners.agents.registry import (ActorParts, Agent, ReplayItem, agent_names, get_agent,  # noqa: F401
                                             register, unregister)
from rillet.learners.agents import agent57, dqn, himo, meme, ngu, pac, r2d2, recode, td3, tdu  # noqa: F401,E402 (registers)
