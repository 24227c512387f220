"""A running job's resume point, kept in the store beside its counters.

Output records of the file in progress are appended to a spool file under
``DATA_DIR/spool/{jobId}/``; the checkpoint says how many of its bytes are good
(``spool_size``) and where the input resumes (``offset``, ``line``). Counters and checkpoint
are saved in one store write, so after a crash the spool is cut back to ``spool_size`` and
every record is in the output exactly once. That pair is also what a final status makes the
output location match (``JobRunner._settle``).

With an object store that offers resumable uploads (S3: ``objects.base.ResumableUploads``),
the file in progress is also checkpointed into the store itself: once ``part_bytes`` of
output wait beyond the last part, they are uploaded as the next part of one multipart upload
of the file's ``.out``, and the part (number, ETag, size, records) is saved in the same
checkpoint write as the counters it brings. An engine that takes the job over without the
spool (another machine's disk) goes back to the end of the last part (``back_to_parts``),
not to the file's start; only the output after it is redone. The local store never has
parts: its spool and hard link stay the fast path.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchrock.engine.inputs import InputFile
from batchrock.jobs import Counters

VERSION = 1


@dataclass(slots=True, kw_only=True)
class Checkpoint:
    files: list[InputFile]
    #: Index in ``files`` of the file in progress; ``len(files)`` when all are done.
    file: int = 0
    #: Input byte offset and line number after the last record written to the spool.
    offset: int = 0
    line: int = 0
    #: Spool file name (under the job's spool folder) and its good length.
    spool: str = ""
    spool_size: int = 0
    #: Counters when the file in progress started: a lost spool restarts the file from them.
    file_base: Counters = field(default_factory=Counters)
    #: The spool holds the whole file's results and the counters count them: all that is
    #: left is to publish it as the file's ``.out``. Saved before publishing, so a run that
    #: dies in between is followed by one that publishes the same spool, not one that redoes
    #: the file (see ``JobRunner._publish``).
    done: bool = False
    #: The multipart upload of the file's ``.out`` (empty: none) and its parts so far, each
    #: ``{"n": number, "etag": ..., "size": bytes, "records": count}``; the upload is saved
    #: with its first part, so one without parts is never in a checkpoint.
    upload: str = ""
    parts: list[dict[str, Any]] = field(default_factory=list)
    #: The number the next part gets. Every run skips one (``skip_part``): a worker that
    #: lost the job may still upload the number it had next, which its successor never uses.
    next_part: int = 1
    #: Where the last part ends: input offset, line, and the counters up to it.
    parts_offset: int = 0
    parts_line: int = 0
    parts_counters: Counters = field(default_factory=Counters)
    #: Output bytes (all in parts) before the spool's first byte: 0, unless this run started
    #: from the parts without the spool that held them.
    spool_from: int = 0

    @property
    def parts_bytes(self) -> int:
        return sum(int(p["size"]) for p in self.parts)

    @property
    def tail_start(self) -> int:
        """Where, in the spool, the output that is in no part yet starts."""
        return self.parts_bytes - self.spool_from

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "files": [f.to_json() for f in self.files],
            "file": self.file,
            "offset": self.offset,
            "line": self.line,
            "spool": self.spool,
            "spool_size": self.spool_size,
            "file_base": dataclasses.asdict(self.file_base),
            "done": self.done,
            "upload": self.upload,
            "parts": self.parts,
            "next_part": self.next_part,
            "parts_offset": self.parts_offset,
            "parts_line": self.parts_line,
            "parts_counters": dataclasses.asdict(self.parts_counters),
            "spool_from": self.spool_from,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint | None:
        """``None`` for a checkpoint this version cannot read (the job then restarts)."""
        if data.get("v") != VERSION:
            return None
        return cls(
            files=[InputFile.from_json(f) for f in data["files"]],
            file=data["file"],
            offset=data["offset"],
            line=data["line"],
            spool=data["spool"],
            spool_size=data["spool_size"],
            # A checkpoint from before throttled requests were counted has no such field.
            file_base=Counters(**data["file_base"]),
            done=data.get("done", False),
            # Checkpoints from before resumable uploads have none of these.
            upload=data.get("upload", ""),
            parts=list(data.get("parts", [])),
            next_part=data.get("next_part", 1),
            parts_offset=data.get("parts_offset", 0),
            parts_line=data.get("parts_line", 0),
            parts_counters=Counters(**data.get("parts_counters", {})),
            spool_from=data.get("spool_from", 0),
        )

    def next_file(self, counters: Counters) -> None:
        self.file += 1
        self.offset = 0
        self.line = 0
        self.spool = ""
        self.spool_size = 0
        self.file_base = counters
        self.done = False
        self._forget_parts()

    def restart_file(self) -> None:
        """Forget the file in progress's spool and parts: it is redone from its start (with
        ``file_base``'s counters). A forgotten upload is aborted when the job ends."""
        self.offset = self.line = self.spool_size = 0
        self.done = False
        self._forget_parts()

    def _forget_parts(self) -> None:
        self.upload = ""
        self.parts = []
        self.next_part = 1
        self.parts_offset = self.parts_line = self.spool_from = 0
        self.parts_counters = Counters()

    def back_to_parts(self, total: int) -> Counters:
        """The spool is lost: resume from the end of the last part (from the file's start
        when there is none). Returns the counters to resume with."""
        if not self.parts:
            self.restart_file()
            return dataclasses.replace(self.file_base, total=total)
        self.offset, self.line = self.parts_offset, self.parts_line
        self.spool_from, self.spool_size = self.parts_bytes, 0
        self.done = False
        return dataclasses.replace(self.parts_counters, total=total)

    def add_part(self, number: int, etag: str, size: int, counters: Counters) -> None:
        """Record a part just uploaded: it ends where the checkpoint is now (``offset``,
        ``line``, ``counters``), and holds the records since the previous part."""
        before = self.parts_counters if self.parts else self.file_base
        self.parts.append(
            {
                "n": number,
                "etag": etag,
                "size": size,
                "records": counters.processed - before.processed,
            }
        )
        self.next_part = number + 1
        self.parts_offset, self.parts_line = self.offset, self.line
        self.parts_counters = counters

    def skip_part(self) -> None:
        if self.upload:
            self.next_part += 1


def spool_root(data_dir: Path) -> Path:
    return data_dir / "spool"


def spool_dir(data_dir: Path, job_id: str) -> Path:
    return spool_root(data_dir) / job_id


def new_spool_name(file_index: int) -> str:
    # A fresh name per attempt: a worker that lost its lease but still runs writes to its own
    # file, never into the one its successor resumes.
    return f"{file_index:05d}-{secrets.token_hex(4)}.out"


def open_spool(path: Path, good_size: int) -> Any:
    """Open the spool for appending, cut back to its last checkpointed length."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+b")
    handle.truncate(good_size)
    handle.seek(good_size)
    return handle


#: Lines handed to one writev call (POSIX allows at least 16; Linux and macOS take 1024).
_IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16


def append_durably(handle: Any, lines: list[bytes]) -> None:
    """Append ``lines`` to the spool and fsync it. Called in a worker thread: writev hands
    the lines to the kernel as they are, without the GIL and without joining them first
    (a join would hold the GIL that the event loop needs meanwhile)."""
    handle.flush()
    fd = handle.fileno()
    if not hasattr(os, "writev"):
        handle.write(b"".join(lines))
        handle.flush()
    else:
        for start in range(0, len(lines), _IOV_MAX):
            part = lines[start : start + _IOV_MAX]
            written = os.writev(fd, part)
            if written < sum(map(len, part)):  # a short write (rare on a file): the rest
                rest = memoryview(b"".join(part))[written:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
    os.fsync(fd)


def manifest_bytes(counters: Counters) -> bytes:
    """``manifest.json.out``, with Bedrock's field names."""
    return orjson.dumps(
        {
            "totalRecordCount": counters.total,
            "processedRecordCount": counters.processed,
            "successRecordCount": counters.success,
            "errorRecordCount": counters.error,
            "inputTokenCount": counters.input_tokens,
            "outputTokenCount": counters.output_tokens,
            # Not in Bedrock's manifest: how often the model said "slow down" (429), retried
            # requests included, so a job slowed by throttling shows why.
            "throttledRequestCount": counters.throttled,
        }
    )
