"""Job state-change events (docs/events.md): Bedrock's EventBridge envelope (:mod:`.envelope`),
built from the store's status history and delivered through an outbox (:mod:`.outbox`) to the
configured sinks (:mod:`.sinks`: a webhook, a JSONL file, an EventBridge bus)."""

from __future__ import annotations
