"""``batchrock`` entry point.

``serve``, ``worker``, ``models``, ``demo`` and ``keys`` belong to :mod:`batchrock.admin`
(imported only for them, so the client path stays fast); everything else is the
AWS-CLI-compatible client.
"""

from __future__ import annotations

import os
import sys

ADMIN_COMMANDS = frozenset({"serve", "worker", "models", "demo", "keys"})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ADMIN_COMMANDS:
        from batchrock import admin

        return admin.main(args)
    from batchrock.cli.driver import Streams, run

    rc = run(args, os.environ, Streams(sys.stdout, sys.stderr))
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): silence the interpreter's own flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
