"""A job's output location as the console shows it: its files, its error records, a prefix
browser for choosing input. Everything goes through the :class:`ObjectStore` seam, and a file
is served only when its key is one the listing of the job's own output folder returned, so no
name a user types can reach another object.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from batchrock.jobs import Job
from batchrock.objects import ObjectInfo, ObjectStore, ObjectStoreError, S3Location, parse_s3_uri

log = logging.getLogger("batchrock.console")

MANIFEST_NAME = "manifest.json.out"
#: Error records per page.
ERROR_PAGE = 20
#: Bytes one error-records request reads at most before it answers with what it found (and
#: where to go on): a page of a huge file with few errors stays a bounded request.
ERROR_SCAN_BYTES = 32 * 1024 * 1024
#: Characters of an error record's modelInput shown (the rest is in the file).
INPUT_PREVIEW_CHARS = 4000
#: Entries a prefix listing shows.
BROWSE_LIMIT = 500


def output_folder(job: Job) -> S3Location:
    """``{outputS3Uri}/{jobId}/``: where the engine writes the job's files."""
    return parse_s3_uri(job.output_s3_uri).child(job.job_id)


async def output_files(objects: ObjectStore, job: Job) -> list[ObjectInfo]:
    """The job's output objects, keys relative to its output folder, the manifest last."""
    folder = output_folder(job)
    prefix = folder.key + "/"
    try:
        found = await objects.list_objects(folder.bucket, prefix)
    except ObjectStoreError as exc:
        # No bucket yet, or not reachable: nothing to show (the job's message says why).
        log.debug("job %s: no output listing: %s", job.job_id, exc)
        return []
    files = [
        ObjectInfo(o.key[len(prefix) :], o.size, o.etag, o.modified)
        for o in found
        if o.key.startswith(prefix) and len(o.key) > len(prefix)
    ]
    return sorted(files, key=lambda o: (o.key == MANIFEST_NAME, o.key))


async def find_output(objects: ObjectStore, job: Job, name: str) -> ObjectInfo | None:
    """The output file called ``name`` (relative key), only if the listing has it."""
    for info in await output_files(objects, job):
        if info.key == name:
            return info
    return None


async def manifest(objects: ObjectStore, job: Job) -> dict[str, Any] | None:
    folder = output_folder(job)
    key = folder.child(MANIFEST_NAME).key
    try:
        data = b"".join([chunk async for chunk in objects.read(folder.bucket, key)])
        parsed = orjson.loads(data[:65536])
    except (ObjectStoreError, orjson.JSONDecodeError) as exc:
        log.debug("job %s: no manifest to show: %s", job.job_id, exc)  # not written yet
        return None
    return parsed if isinstance(parsed, dict) else None


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    file: str
    line: int
    record_id: str | None
    error_code: Any
    error_message: str
    model_input: str

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "recordId": self.record_id,
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
            "modelInput": self.model_input,
        }


@dataclass(frozen=True, slots=True)
class ErrorPage:
    records: list[ErrorRecord]
    #: Where the next page starts ("file index:byte offset:line"), or None at the end.
    next: str | None


def parse_cursor(text: str | None) -> tuple[int, int, int]:
    if not text:
        return 0, 0, 1
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() and len(p) < 16 for p in parts):
        raise ValueError(text)
    return int(parts[0]), int(parts[1]), int(parts[2])


async def error_records(objects: ObjectStore, job: Job, cursor: str | None) -> ErrorPage:
    """A page of the job's error records (lines of its ``.out`` files with an ``error``), in
    file and line order, from ``cursor`` on. Raises ValueError for a malformed cursor."""
    file_index, offset, line_no = parse_cursor(cursor)
    files = [f for f in await output_files(objects, job) if f.key.endswith(".out")]
    files = [f for f in files if f.key != MANIFEST_NAME]
    folder = output_folder(job)
    found: list[ErrorRecord] = []
    scanned = 0
    while file_index < len(files):
        info = files[file_index]
        key = folder.child(info.key).key
        pending = b""
        position = offset
        try:
            async for chunk in objects.read(folder.bucket, key, offset):
                scanned += len(chunk)
                data = pending + chunk
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                lines = data[:cut]
                # Parsing runs off the loop: a 4 MiB chunk of error lines takes milliseconds.
                page, position, line_no, full = await asyncio.to_thread(
                    _scan, lines, info.key, position, line_no, ERROR_PAGE - len(found)
                )
                found += page
                if full:
                    return ErrorPage(found, f"{file_index}:{position}:{line_no}")
                if scanned >= ERROR_SCAN_BYTES:
                    return ErrorPage(found, f"{file_index}:{position}:{line_no}")
        except ObjectStoreError as exc:
            # A file removed or replaced meanwhile (the engine republishes a stopped job's
            # files): go on with the next.
            log.debug("job %s: error records of %s: %s", job.job_id, info.key, exc)
        if pending.strip():
            page, position, line_no, _ = _scan(
                pending + b"\n", info.key, position, line_no, ERROR_PAGE - len(found)
            )
            found += page
        file_index, offset, line_no = file_index + 1, 0, 1
        if len(found) >= ERROR_PAGE:
            return ErrorPage(found, f"{file_index}:0:1" if file_index < len(files) else None)
    return ErrorPage(found, None)


def _scan(
    lines: bytes, name: str, position: int, line_no: int, want: int
) -> tuple[list[ErrorRecord], int, int, bool]:
    """Error records among whole ``lines`` starting at byte ``position`` (line ``line_no``):
    (records, next position, next line number, whether ``want`` were found)."""
    out: list[ErrorRecord] = []
    start = 0
    while start < len(lines):
        end = lines.find(b"\n", start)
        end = len(lines) if end < 0 else end
        raw = lines[start:end]
        here = line_no
        start = end + 1
        line_no += 1
        if b'"error"' not in raw:
            continue
        record = _error_record(raw, name, here)
        if record is not None:
            out.append(record)
            if len(out) >= want:
                return out, position + start, line_no, True
    return out, position + len(lines), line_no, False


def _error_record(raw: bytes, name: str, line: int) -> ErrorRecord | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return None
    error = data["error"]
    model_input = orjson.dumps(data.get("modelInput"), option=orjson.OPT_INDENT_2).decode()
    if len(model_input) > INPUT_PREVIEW_CHARS:
        model_input = model_input[:INPUT_PREVIEW_CHARS] + "\n..."
    record_id = data.get("recordId")
    return ErrorRecord(
        file=name,
        line=line,
        record_id=record_id if isinstance(record_id, str) else None,
        error_code=error.get("errorCode"),
        error_message=str(error.get("errorMessage", "")),
        model_input=model_input,
    )


@dataclass(frozen=True, slots=True)
class Listing:
    bucket: str
    prefix: str
    folders: list[str]
    files: list[ObjectInfo]
    truncated: bool


async def browse(objects: ObjectStore, bucket: str, prefix: str) -> Listing:
    """The sub-folders and files directly below ``s3://bucket/prefix`` (a prefix ending in
    ``/``, or empty). Raises the store's errors (no such bucket, a bad name)."""
    found = await objects.list_objects(bucket, prefix)
    folders: dict[str, None] = {}
    files: list[ObjectInfo] = []
    truncated = False
    for info in found:
        rest = info.key[len(prefix) :]
        head, sep, _ = rest.partition("/")
        if len(folders) + len(files) >= BROWSE_LIMIT:
            truncated = True
            break
        if sep:
            folders.setdefault(prefix + head + "/")
        elif rest:
            files.append(info)
    return Listing(bucket, prefix, list(folders), files, truncated)
