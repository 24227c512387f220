"""``python -m batchrock.cli``: the same entry point as the ``batchrock`` console script."""

from __future__ import annotations

from batchrock.cli.main import main

raise SystemExit(main())
