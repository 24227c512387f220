"""The web console at ``/console`` on ``batchrock serve`` (docs/console.md): an edge, as the
API is, over the same service layer."""

from __future__ import annotations

from batchrock.console.app import Console, owns

__all__ = ["Console", "owns"]
