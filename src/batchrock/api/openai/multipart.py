"""A streaming, bounded reader of ``multipart/form-data`` bodies (RFC 7578), for uploads.

Fed the body chunk by chunk as it arrives, it hands back events: a part's start (its name,
file name and type), its data in pieces, its end. Nothing is buffered beyond one delimiter's
length of a part's data and one part's head (``max_head_bytes``), so an upload of any size
costs constant memory and each chunk a ``bytes.find``: the event loop is never held.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd
_END = PartEnd()


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, or ``None``."""
    if not content_type:
        return None
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for match in _PARAM.finditer(";" + params):
        if match.group(1).lower() == "boundary":
            value = match.group(2) if match.group(2) is not None else match.group(3)
            if value and len(value) <= 70:
                return value.encode("latin-1")
    return None


class MultipartReader:
    def __init__(self, boundary: bytes, *, max_head_bytes: int = 16384, max_parts: int = 32):
        self._delimiter = b"\r\n--" + boundary
        # The first boundary may open the body without a CRLF before it.
        self._buf = b"\r\n"
        self._state = "preamble"
        self._max_head = max_head_bytes
        self._parts_left = max_parts

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        buf = self._buf + chunk if self._buf else chunk
        delimiter = self._delimiter
        while True:
            state = self._state
            if state == "data":
                at = buf.find(delimiter)
                if at < 0:
                    keep = len(delimiter) - 1
                    if len(buf) > keep:
                        events.append(PartData(buf[: len(buf) - keep]))
                        buf = buf[len(buf) - keep :]
                    break
                if at:
                    events.append(PartData(buf[:at]))
                events.append(_END)
                buf = buf[at + len(delimiter) :]
                self._state = "after"
            elif state == "preamble":
                at = buf.find(delimiter)
                if at < 0:
                    if len(buf) > self._max_head:
                        raise MultipartError("The body does not start with the multipart boundary.")
                    break
                buf = buf[at + len(delimiter) :]
                self._state = "after"
            elif state == "after":
                if len(buf) < 2:
                    break
                if buf.startswith(b"--"):
                    self._state = "done"
                    buf = b""
                    break
                if not buf.startswith(b"\r\n"):
                    raise MultipartError("A multipart boundary is not followed by a line break.")
                buf = buf[2:]
                self._state = "head"
            elif state == "head":
                at = buf.find(b"\r\n\r\n")
                if at < 0:
                    if len(buf) > self._max_head:
                        raise MultipartError("A part's headers are too large.")
                    break
                self._parts_left -= 1
                if self._parts_left < 0:
                    raise MultipartError("The body has too many parts.")
                events.append(_part_start(buf[:at]))
                buf = buf[at + 4 :]
                self._state = "data"
            else:  # done: an epilogue is ignored
                buf = b""
                break
        self._buf = buf
        return events

    def close(self) -> None:
        """Raise :class:`MultipartError` unless the closing boundary was read."""
        if self._state != "done":
            raise MultipartError("The multipart body ended before its closing boundary.")


def _part_start(head: bytes) -> PartStart:
    name: str | None = None
    filename: str | None = None
    content_type: str | None = None
    for raw in head.split(b"\r\n"):
        key, sep, value = raw.decode("utf-8", "replace").partition(":")
        if not sep:
            raise MultipartError("A part has a malformed header line.")
        key = key.strip().lower()
        if key == "content-disposition":
            kind, _, params = value.partition(";")
            if kind.strip().lower() != "form-data":
                raise MultipartError("A part is not form-data.")
            for match in _PARAM.finditer(";" + params):
                found = match.group(2) if match.group(2) is not None else match.group(3)
                found = re.sub(r"\\(.)", r"\1", found)
                if match.group(1).lower() == "name":
                    name = found
                elif match.group(1).lower() == "filename":
                    filename = found
        elif key == "content-type":
            content_type = value.strip()
    if name is None:
        raise MultipartError("A part has no Content-Disposition name.")
    return PartStart(name, filename, content_type)
