"""Spacelift GraphQL API simulator: a seeded account model served over HTTP.

Public API: SimClock, World, WorldConfig, Simulator (see each class).
"""

from .clock import SimClock
from .server import Simulator
from .world import World, WorldConfig

__all__ = ["SimClock", "Simulator", "World", "WorldConfig"]
