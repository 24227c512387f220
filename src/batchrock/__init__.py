"""batchrock: a self-hosted, open-source Amazon Bedrock batch inference service."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
