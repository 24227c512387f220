"""The Validating step: find a job's input files, check every record's shape and the quotas.

Everything wrong here ends the job ``Failed`` with a message naming what to fix (the file and
line, or the quota and the numbers), never an exception escaping to the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from batchrock.engine.records import (
    LINE_ERRORS,
    UTF8_BOM,
    BadRecord,
    LineTooLong,
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
    ObjectChanged,
    ObjectInfo,
    ObjectStore,
    ObjectStoreError,
    S3Location,
    parse_s3_uri,
)
from batchrock.settings import Settings

JSONL_SUFFIX = ".jsonl"


class InputError(Exception):
    """Validation failed; the message is the job's ``message``."""


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
    except (InvalidLocation, ObjectStoreError) as exc:
        raise InputError(f"Cannot read the input location {input_uri}: {exc}") from None
    if not found:
        folder = objects.local_folder(loc.bucket, loc.key)
        where = ""
        if folder is not None and (not loc.key or loc.key.endswith("/")):
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


async def count_records(
    objects: ObjectStore,
    file: InputFile,
    settings: Settings,
    *,
    records_before: int,
    keep_going: Callable[[], Awaitable[bool]],
) -> int:
    """Check every line of ``file`` and return how many records it holds.

    ``records_before`` (records in earlier files) lets the job-wide maximum fail early;
    ``keep_going`` is awaited now and then (it renews the lease and says whether the job
    was stopped meanwhile; ``False`` abandons the scan).
    """
    count = 0
    number = 0
    try:
        chunks = objects.read(file.bucket, file.key, if_match=file.etag)
        async for block in iter_blocks(chunks):
            lines = block.count(b"\n")
            # A block's records in one call. msgspec skips inside values without checking
            # their UTF-8, hence the second check; blank lines are skipped silently, hence
            # the count. Anything unusual is read line by line, for the exact message.
            try:
                fast = len(check_lines(block)) == lines and is_utf8(block)
            except LINE_ERRORS:
                fast = False
            count += lines if fast else _check_lines_one_by_one(block, number, file)
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
    except ObjectStoreError as exc:
        raise InputError(f"Cannot read the input file {file.uri}: {exc}") from None
    return count


def _check_lines_one_by_one(block: bytes, before: int, file: InputFile) -> int:
    """The records in ``block`` (whose first line is line ``before + 1``)."""
    count = 0
    lines = block_lines(block)
    if before == 0 and lines[0].startswith(UTF8_BOM):
        lines[0] = lines[0][len(UTF8_BOM) :]  # editors on Windows write one
    for number, data in enumerate(lines, before + 1):
        if is_blank(data):
            continue
        try:
            check_line(data)
            ok = is_utf8(data)
        except LINE_ERRORS:
            ok = False
        if not ok:
            try:
                parse_record(data)
            except BadRecord as exc:
                raise InputError(
                    f"Line {number} of the input file {file.uri} {exc}. Every line must be a "
                    f'JSON object with a "modelInput" object and an optional "recordId" '
                    f"string."
                ) from None
        count += 1
    return count


def check_record_quotas(total: int, settings: Settings) -> None:
    if total < settings.quota_min_records_per_job:
        raise InputError(
            f"The job has {total} records, fewer than the quota 'Minimum number of records "
            f"per batch inference job' of {settings.quota_min_records_per_job}."
        )


async def check_output_location(objects: ObjectStore, output_uri: str) -> S3Location:
    try:
        loc = parse_s3_uri(output_uri)
        if not await objects.bucket_exists(loc.bucket):
            raise _no_bucket(objects, "output", loc.bucket, output_uri)
    except (InvalidLocation, ObjectStoreError) as exc:
        raise InputError(f"Cannot use the output location {output_uri}: {exc}") from None
    return loc
