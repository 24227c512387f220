"""The data dir is private to the user running the service, unless the settings say otherwise.

Everything batchrock keeps is in it: the job database (prompts are in the job records' input
locations, results in outputs), spool files, the local object store's buckets. With
``private_files`` (the default) :func:`prepare` makes the data dir 0700, and sets the
process's umask to 077 so that every file and folder the process creates is its owner's only:
the SQLite database and its ``-wal``/``-shm`` files, spools, objects. A umask covers files
that libraries create (SQLite makes ``-wal``/``-shm`` itself) as well as ours.

A data dir that already exists with looser modes is tightened to 0700 (others can then reach
nothing inside it, whatever the files' own modes), with one warning in the log; if it cannot
be changed (another user owns it), the warning says so and the service goes on.
"""

from __future__ import annotations

import logging
import os
import stat

from batchrock.settings import Settings

log = logging.getLogger("batchrock")

#: The bits that let anyone but the owner in.
_OTHERS = 0o077


def prepare(settings: Settings) -> None:
    """Create the data dir, private per ``settings.private_files`` (see the module doc)."""
    path = settings.data_dir
    if not settings.private_files:
        path.mkdir(parents=True, exist_ok=True)
        return
    os.umask(os.umask(_OTHERS) | _OTHERS)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & _OTHERS:
        return
    try:
        os.chmod(path, mode & ~_OTHERS)
    except OSError as exc:
        log.warning(
            "the data dir %s is open to other users (mode %03o) and cannot be made private: "
            "%s (set private_files = false to leave its modes alone)",
            path,
            mode,
            exc.strerror,
        )
        return
    log.warning(
        "the data dir %s was open to other users (mode %03o); it is now %03o "
        "(set private_files = false to leave its modes alone)",
        path,
        mode,
        mode & ~_OTHERS,
    )
