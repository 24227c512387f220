"""Job persistence: a narrow interface (:mod:`.base`) and its implementations."""

from __future__ import annotations
