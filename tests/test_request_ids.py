"""x-amzn-RequestId values (logs.new_request_id): random version-4 UUIDs, as uuid4 writes them."""

from __future__ import annotations

import os
import uuid

from batchrock import logs


def test_request_ids_are_version_4_uuids_and_never_repeat() -> None:
    # Several batches of the OS's random bytes (128 ids each), so their seams are crossed.
    ids = [logs.new_request_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value  # lower case, dashes where uuid4 puts them
    # Every variant digit occurs (its two random bits are kept).
    assert {value[19] for value in ids} == set("89ab")


def test_a_forked_child_draws_ids_of_its_own() -> None:
    logs.new_request_id()  # the parent holds a batch not yet used up
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(logs.new_request_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    parent = [logs.new_request_id() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
