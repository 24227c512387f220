"""Object storage for job input and output: a local folder (default) or any S3 service."""

from __future__ import annotations

from batchrock.objects.base import (
    InvalidLocation,
    NoSuchBucket,
    NoSuchKey,
    NotAFolder,
    NotAnObject,
    ObjectChanged,
    ObjectInfo,
    ObjectStore,
    ObjectStoreError,
    ReadStalled,
    ResumableUploads,
    S3Location,
    UploadedPart,
    UploadGone,
    parse_s3_uri,
    resumable,
)
from batchrock.objects.local import LocalObjectStore
from batchrock.objects.s3 import MIN_PART_BYTES, S3ObjectStore
from batchrock.settings import Settings

__all__ = [
    "InvalidLocation",
    "LocalObjectStore",
    "NoSuchBucket",
    "NoSuchKey",
    "NotAFolder",
    "NotAnObject",
    "ObjectChanged",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStoreError",
    "ReadStalled",
    "ResumableUploads",
    "S3Location",
    "S3ObjectStore",
    "UploadGone",
    "UploadedPart",
    "build_object_store",
    "parse_s3_uri",
    "resumable",
]


def build_object_store(settings: Settings) -> ObjectStore:
    """The object store ``settings`` ask for (``object_store`` = ``local`` or ``s3``)."""
    kind = settings.object_store.strip().lower()
    if kind == "local":
        return LocalObjectStore(
            settings.data_dir / "s3",
            private=settings.private_files,
            read_timeout=settings.object_read_timeout_seconds,
        )
    if kind == "s3":
        return S3ObjectStore(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            virtual_hosted_style=settings.s3_virtual_hosted_style,
            read_timeout=settings.object_read_timeout_seconds,
            part_bytes=max(settings.s3_part_bytes, MIN_PART_BYTES),
        )
    raise ValueError(f"object_store must be 'local' or 's3', not {settings.object_store!r}")
