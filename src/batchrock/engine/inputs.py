"""The Validating step: find a job's input files, check every record's shape and the quotas.

Everything wrong here ends the job ``Failed`` with a message naming what to fix (the file and
line, or the quota and the numbers), never an exception escaping to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from batchrock.catalogue import CatalogueModel
from batchrock.engine.records import (
    LINE_ERRORS,
    UTF8_BOM,
    BadRecord,
    LineTooLong,
    binary_start,
    block_lines,
    check_line,
    check_lines,
    is_blank,
    is_utf8,
    iter_blocks,
    parse_record,
)
from batchrock.objects.base import (
    InvalidLocation,
    NoSuchBucket,
    NotAnObject,
    ObjectChanged,
    ObjectInfo,
    ObjectStore,
    ObjectStoreError,
    S3Location,
    parse_s3_uri,
)
from batchrock.settings import Settings

log = logging.getLogger("batchrock.engine")

JSONL_SUFFIX = ".jsonl"


class InputError(Exception):
    """Validation failed; the message is the job's ``message``. ``output_checked``: the
    output location had been found usable before (what a first manifest there may be is
    this job's)."""

    def __init__(self, message: str, *, output_checked: bool = False) -> None:
        super().__init__(message)
        self.output_checked = output_checked


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input object as Validating found it, and where its results go."""

    bucket: str
    key: str
    size: int
    #: The name under ``{output}/{jobId}/``: the key relative to the input prefix (the file
    #: name for a single-object input), plus ``.out``.
    out_name: str
    records: int = 0
    #: The object's ETag (or the local store's stand-in) and modification time when it was
    #: validated: the engine reads that object or fails the job (see :func:`changed_message`).
    etag: str | None = None
    modified: datetime | None = None

    @classmethod
    def found(cls, info: ObjectInfo, bucket: str, out_name: str) -> InputFile:
        return cls(bucket, info.key, info.size, out_name, etag=info.etag, modified=info.modified)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def is_still(self, now: ObjectInfo | None) -> bool:
        """Whether ``now`` (the object's metadata today) is the object that was validated."""
        if now is None or now.size != self.size:
            return False
        if self.etag is not None and now.etag is not None:
            return now.etag == self.etag
        # A store without ETags: the modification time is all there is to go by.
        return self.modified is None or now.modified is None or now.modified == self.modified

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "out": self.out_name,
            "records": self.records,
            "etag": self.etag,
            "modified": None if self.modified is None else self.modified.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputFile:
        # Checkpoints from before files were identified have no etag or time: not checked.
        modified = data.get("modified")
        return cls(
            data["bucket"],
            data["key"],
            data["size"],
            data["out"],
            data["records"],
            etag=data.get("etag"),
            modified=None if modified is None else datetime.fromisoformat(modified),
        )


def changed_message(file: InputFile, now: ObjectInfo | None) -> str:
    """Why the job fails when ``file`` is no longer the object that was validated."""
    if now is None:
        return (
            f"The input file {file.uri} does not exist any more: it was removed after the job "
            f"was validated; submit the job again."
        )
    if now.size != file.size:
        what = f"size {file.size} → {now.size} bytes"
    elif file.modified is not None and now.modified is not None and now.modified != file.modified:
        what = f"last modified {_when(file.modified)} → {_when(now.modified)}"
    else:
        what = "same size and time, but another object"
    return (
        f"The input file {file.uri} changed after the job was validated ({what}); submit the "
        f"job again."
    )


def _when(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _no_bucket(objects: ObjectStore, role: str, bucket: str, uri: str) -> InputError:
    """The message for a missing bucket; in a local store it names the folder to create."""
    folder = objects.local_folder(bucket)
    where = f"; local store: create the folder {folder}" if folder is not None else ""
    return InputError(f"The {role} S3 bucket {bucket!r} does not exist ({uri}{where}).")


async def find_input_files(objects: ObjectStore, input_uri: str) -> list[InputFile]:
    """The ``.jsonl`` objects that ``input_uri`` names: one object, or all under a prefix."""
    try:
        loc = parse_s3_uri(input_uri)
        if not await objects.bucket_exists(loc.bucket):
            raise _no_bucket(objects, "input", loc.bucket, input_uri)
        if loc.key and not loc.key.endswith("/"):
            single = await objects.head(loc.bucket, loc.key)
            if single is not None:
                if not loc.key.endswith(JSONL_SUFFIX):
                    raise InputError(
                        f"The input file {input_uri} does not end in {JSONL_SUFFIX}: batch "
                        f"inference reads JSONL files only."
                    )
                name = loc.key.rsplit("/", 1)[-1]
                return [InputFile.found(single, loc.bucket, name + ".out")]
        prefix = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
        found = await objects.list_objects(loc.bucket, prefix)
    except NoSuchBucket as exc:
        raise _no_bucket(objects, "input", exc.bucket, input_uri) from None
    except NotAnObject as exc:
        if exc.uri == input_uri:
            raise InputError(f"The input file {exc}") from None
        raise InputError(f"Cannot read the input location {input_uri}: {exc}") from None
    except (InvalidLocation, ObjectStoreError) as exc:
        raise InputError(f"Cannot read the input location {input_uri}: {exc}") from None
    if not found:
        folder = objects.local_folder(loc.bucket, loc.key)
        where = ""
        if folder is not None and loc.key.endswith("/") and folder.is_file():
            # A prefix through a file holds no objects (as on S3); "put files there" would
            # be no help.
            where = f"; local store: {folder} is a file, not a folder"
        elif folder is not None and (not loc.key or loc.key.endswith("/")):
            where = f"; local store: put {JSONL_SUFFIX} files in the folder {folder}"
        elif folder is not None:
            where = f"; local store: there is no file or folder {folder}"
        raise InputError(
            f"The input location {input_uri} does not exist (no object or prefix{where})."
        )
    files = [
        InputFile.found(o, loc.bucket, o.key[len(prefix) :] + ".out")
        for o in found
        if o.key.endswith(JSONL_SUFFIX)
    ]
    if not files:
        raise InputError(
            f"The input location {input_uri} holds no {JSONL_SUFFIX} files "
            f"({len(found)} other object(s) found)."
        )
    return files


def check_size_quotas(files: list[InputFile], settings: Settings) -> None:
    for f in files:
        if f.size > settings.quota_max_file_bytes:
            raise InputError(
                f"The input file {f.uri} is {f.size} bytes, more than the quota 'Batch "
                f"inference input file size' of {settings.quota_max_file_bytes} bytes."
            )
    total = sum(f.size for f in files)
    if total > settings.quota_max_job_bytes:
        raise InputError(
            f"The job's input files total {total} bytes, more than the quota 'Batch inference "
            f"job size' of {settings.quota_max_job_bytes} bytes."
        )


@dataclass(slots=True)
class RecordIds:
    """The recordIds of a job's input seen so far, to find repeats (Bedrock does not say what
    it does with them; see docs/engine.md)."""

    fail: bool
    seen: set[str] = field(default_factory=set)
    repeats: int = 0
    #: The first repeat: (recordId, file URI, line number).
    first: tuple[str, str, int] | None = None

    def add_block(self, ids: list[str | None], file: InputFile, first_line: int) -> None:
        """The recordIds of consecutive lines from ``first_line`` on (``None``: none)."""
        given = [i for i in ids if i is not None]
        seen = self.seen
        if seen.isdisjoint(given):  # the usual case, in passes of C over the block
            before = len(seen)
            seen.update(given)
            if len(seen) - before == len(given):
                return
            seen = set()  # a repeat within the block: find it
        for number, record_id in enumerate(ids, first_line):
            if record_id is None:
                continue
            if record_id in seen:
                self._repeat(record_id, file, number)
            seen.add(record_id)

    def add(self, record_id: str | None, file: InputFile, number: int) -> None:
        self.add_block([record_id], file, number)

    def log_repeats(self, job_id: str) -> None:
        """One warning for the job, when some record repeated a recordId."""
        if self.first is None:
            return
        record_id, uri, line = self.first
        log.warning(
            "job %s: %d record(s) repeat the recordId of an earlier one (the first: %r on "
            "line %d of %s); each is processed, and written with the recordId it has",
            job_id,
            self.repeats,
            record_id,
            line,
            uri,
        )

    def _repeat(self, record_id: str, file: InputFile, number: int) -> None:
        if self.fail:
            raise InputError(
                f"Line {number} of the input file {file.uri} repeats the recordId "
                f"{record_id!r} of an earlier record; every recordId of a job must be unique "
                f"(the setting fail_on_duplicate_record_ids is on)."
            )
        self.repeats += 1
        if self.first is None:
            self.first = (record_id, file.uri, number)


async def count_records(
    objects: ObjectStore,
    file: InputFile,
    settings: Settings,
    *,
    records_before: int,
    keep_going: Callable[[], Awaitable[bool]],
    record_ids: RecordIds | None = None,
) -> int:
    """Check every line of ``file`` and return how many records it holds.

    ``records_before`` (records in earlier files) lets the job-wide maximum fail early;
    ``keep_going`` is awaited now and then (it says whether the job was stopped meanwhile;
    ``False`` abandons the scan). ``record_ids`` collects the recordIds, job-wide.
    """
    ids = record_ids if record_ids is not None else RecordIds(settings.fail_on_duplicate_record_ids)
    count = 0
    number = 0
    try:
        chunks = objects.read(file.bucket, file.key, if_match=file.etag)
        async for block in iter_blocks(_as_listed(chunks, file)):
            lines = block.count(b"\n")
            # A block's records in one call. msgspec skips inside values without checking
            # their UTF-8, hence the second check; blank lines are skipped silently, hence
            # the count. Anything unusual is read line by line, for the exact message.
            try:
                checked = check_lines(block)
                fast = len(checked) == lines and is_utf8(block)
            except LINE_ERRORS:
                fast = False
            if fast:
                count += lines
                ids.add_block([r.recordId for r in checked], file, number + 1)
            else:
                count += _check_lines_one_by_one(block, number, file, ids)
            number += lines
            # Checked per block: a job far over a quota fails without reading all its input,
            # so the count given is a lower bound.
            if count > settings.quota_max_records_per_file:
                raise InputError(
                    f"The input file {file.uri} has at least {count} records, more than the "
                    f"quota 'Records per input file per batch inference job' of "
                    f"{settings.quota_max_records_per_file}."
                )
            if records_before + count > settings.quota_max_records_per_job:
                raise InputError(
                    f"The job has at least {records_before + count} records, more than the "
                    f"quota 'Records per batch inference job' of "
                    f"{settings.quota_max_records_per_job}."
                )
            if not await keep_going():
                return count
    except LineTooLong as exc:
        raise InputError(f"The input file {file.uri}: {exc}.") from None
    except ObjectChanged:
        raise InputError(
            f"The input file {file.uri} changed while the job was being validated; submit the "
            f"job again once it is complete."
        ) from None
    except NotAnObject as exc:
        raise InputError(f"The input file {exc}") from None
    except ObjectStoreError as exc:
        raise InputError(f"Cannot read the input file {file.uri}: {exc}") from None
    return count


async def _as_listed(chunks: AsyncIterator[bytes], file: InputFile) -> AsyncIterator[bytes]:
    """``chunks``, as long as they are the file that was listed: never more bytes than its
    listed size (a file still being written to could otherwise keep the scan going for ever:
    :class:`ObjectChanged`), and text (a compressed file gets a message saying so)."""
    seen = 0
    async for chunk in chunks:
        if not seen and (what := binary_start(chunk)) is not None:
            raise InputError(f"The input file {file.uri} is {what}.")
        seen += len(chunk)
        if seen > file.size:
            raise ObjectChanged(file.bucket, file.key)
        yield chunk


def _check_lines_one_by_one(block: bytes, before: int, file: InputFile, ids: RecordIds) -> int:
    """The records in ``block`` (whose first line is line ``before + 1``)."""
    count = 0
    lines = block_lines(block)
    if before == 0 and lines[0].startswith(UTF8_BOM):
        lines[0] = lines[0][len(UTF8_BOM) :]  # editors on Windows write one
    for number, data in enumerate(lines, before + 1):
        if is_blank(data):
            continue
        try:
            record_id = check_line(data).recordId
            ok = is_utf8(data)
        except LINE_ERRORS:
            ok = False
        if not ok:
            try:
                record_id = parse_record(data).get("recordId")
            except BadRecord as exc:
                raise InputError(
                    f"Line {number} of the input file {file.uri} {exc}. Every line must be a "
                    f'JSON object with a "modelInput" object and an optional "recordId" '
                    f"string."
                ) from None
        ids.add(record_id, file, number)
        count += 1
    return count


#: Settings field -> (the catalogue's Quotas field, unit in bytes or records).
_MODEL_QUOTAS: dict[str, tuple[str, int]] = {
    "quota_min_records_per_job": ("min_records_per_job", 1),
    "quota_max_records_per_job": ("records_per_job", 1),
    "quota_max_records_per_file": ("records_per_input_file", 1),
    "quota_max_file_bytes": ("input_file_size_gb", 1024**3),
    "quota_max_job_bytes": ("job_size_gb", 1024**3),
}


def model_quotas(settings: Settings, model: CatalogueModel | None) -> Settings:
    """``settings`` with the quotas that validate a job for ``model`` (docs/models.md, "Which
    quota applies"): for a catalogued model, each quota setting still at Bedrock's default
    gives way to the model's own value; a setting the operator changed is this deployment's
    adjusted quota (as a Service Quotas increase would be) and applies to every model, so
    ``quota_min_records_per_job = 1`` keeps small jobs possible. Ids outside the catalogue
    (routed, ``allow_any_model``) get the settings."""
    if model is None:
        return settings
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    changes = {
        name: getattr(model.quotas, quota) * unit
        for name, (quota, unit) in _MODEL_QUOTAS.items()
        if getattr(settings, name) == defaults[name]
    }
    return settings.evolve(**changes)


def check_record_quotas(total: int, settings: Settings) -> None:
    if total < settings.quota_min_records_per_job:
        # Bedrock's message first; then how to lower the minimum here, which every new user
        # trying a small job needs.
        raise InputError(
            f"The job has {total} records, fewer than the quota 'Minimum number of records "
            f"per batch inference job' of {settings.quota_min_records_per_job}. (batchrock: "
            f"lower the minimum with the setting quota_min_records_per_job, e.g. "
            f"BATCHROCK_QUOTA_MIN_RECORDS_PER_JOB=1 or batchrock serve "
            f"--quota-min-records-per-job 1.)"
        )


async def check_output_location(objects: ObjectStore, output_uri: str) -> S3Location:
    try:
        loc = parse_s3_uri(output_uri)
        if not await objects.bucket_exists(loc.bucket):
            raise _no_bucket(objects, "output", loc.bucket, output_uri)
    except (InvalidLocation, ObjectStoreError) as exc:
        raise InputError(f"Cannot use the output location {output_uri}: {exc}") from None
    return loc


@dataclass(frozen=True, slots=True)
class Scan:
    """What Validating found: the input files (with their record counts) and the total."""

    files: list[InputFile]
    total: int


async def scan_inputs(
    objects: ObjectStore,
    settings: Settings,
    *,
    job_id: str,
    input_uri: str,
    output_uri: str,
    halt: asyncio.Event,
    keep_going: Callable[[], Awaitable[bool]],
) -> Scan | None:
    """Validating's checks, in order: the output location, the input files, the quotas and
    every record. ``None`` when ``halt`` was set first (a stop, the engine shutting down):
    the scan is abandoned at once, even in the middle of a read that is waiting on storage.
    Raises :class:`InputError`."""

    async def scan() -> Scan | None:
        await check_output_location(objects, output_uri)
        try:
            files = await find_input_files(objects, input_uri)
            check_size_quotas(files, settings)
            ids = RecordIds(settings.fail_on_duplicate_record_ids)
            total = 0
            for i, f in enumerate(files):
                n = await count_records(
                    objects,
                    f,
                    settings,
                    records_before=total,
                    keep_going=keep_going,
                    record_ids=ids,
                )
                if halt.is_set():
                    return None
                files[i] = replace(f, records=n)
                total += n
            check_record_quotas(total, settings)
            ids.log_repeats(job_id)
            return Scan(files, total)
        except (InputError, ObjectStoreError) as exc:
            raise InputError(str(exc), output_checked=True) from None

    task = asyncio.ensure_future(scan())
    halted = asyncio.ensure_future(halt.wait())
    try:
        await asyncio.wait({task, halted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        halted.cancel()
        if not task.done():
            # The read it waits on may go on in its thread; nothing waits for it any more.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()
