"""Model backends: what answers each record's ``modelInput``."""

from __future__ import annotations
