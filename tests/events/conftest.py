"""moto's server, shared with the engine's tests (the EventBridge sink's test uses it)."""

from __future__ import annotations

from tests.engine.conftest import moto_url  # noqa: F401  (a fixture)
