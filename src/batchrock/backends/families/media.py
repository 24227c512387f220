"""Media named by S3 location inside a body (Nova's ``{"s3Location": {"uri", "bucketOwner"}}``).

Parsers record each one as a :class:`~batchrock.backends.neutral.MediaRef`; the built-in model
checks that it exists and that the job may read its bucket (docs/models.md, "Media in S3"),
and a backend that cannot fetch media refuses the record.
"""

from __future__ import annotations

from typing import Any

from batchrock.backends.families.schema import Checker
from batchrock.backends.neutral import MediaRef

_S3 = frozenset({"uri", "bucketOwner"})


def s3_location(c: Checker, location: Any, path: str, refs: list[MediaRef]) -> str | None:
    """An ``s3Location`` object (``uri``, ``bucketOwner``): recorded in ``refs``."""
    if not c.obj(location, path, ("uri",), _S3):
        return None
    uri = c.string(location, "uri", path, min_length=1)
    owner = c.string(location, "bucketOwner", path)
    if owner is not None and not (len(owner) == 12 and owner.isascii() and owner.isdigit()):
        text = f"string [{owner}] does not match pattern ^[0-9]{{12}}$"
        if c.style == "converse":
            text = (
                f"Value '{owner}' at '{{path}}' failed to satisfy constraint: Member must "
                "satisfy regular expression pattern: [0-9]{12}"
            )
        c.fail(c.child(path, "bucketOwner"), text)
        owner = None
    if uri is None:
        return None
    refs.append(MediaRef(uri, owner, path.removeprefix("#/")))
    return uri
