"""``batchrock`` entry point.

``serve``, ``worker``, ``models``, ``demo`` and ``keys`` belong to :mod:`batchrock.admin`
(imported only for them, so the client path stays fast); everything else is the
AWS-CLI-compatible client.
"""

from __future__ import annotations

import os
import sys

#: The service's own commands and their one-line descriptions (``batchrock --help`` lists
#: them next to the Bedrock operations; ``batchrock <command> --help`` repeats the line).
ADMIN_COMMANDS = {
    "serve": "Serve the Bedrock API (and run jobs, unless --no-engine).",
    "worker": "Run jobs from the same data dir as a running server, without serving the API.",
    "models": "Show which backend answers which model ids.",
    "demo": "Start a local service, run sample jobs and show their progress.",
    "keys": "Manage the keys of the credentials file (access keys and Bedrock API keys).",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ADMIN_COMMANDS:
        from batchrock import admin

        try:
            return admin.main(args)
        except BrokenPipeError:
            # `batchrock models | head`: the reader went away; nothing left to say.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
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
