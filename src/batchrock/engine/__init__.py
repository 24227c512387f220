"""The lifecycle driver: validates jobs, runs their records through a model, writes output."""

from __future__ import annotations

from batchrock.engine.engine import Engine
from batchrock.engine.runner import Resolver

__all__ = ["Engine", "Resolver"]
