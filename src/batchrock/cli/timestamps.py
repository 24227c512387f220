"""Timestamp parsing and rendering with botocore's rules, without importing botocore.

Input (``--submit-time-after``): epoch numbers first, then anything dateutil understands; a
naive time is UTC; the wire form is ``%Y-%m-%dT%H:%M:%S[.%f]Z`` in UTC.
Output: ``iso8601`` (v2's default) is ``parse(value).isoformat()``, an epoch number being shown
in the local zone; ``wire`` passes the value through.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

# Strings this matches parse identically with datetime.fromisoformat and dateutil, so the
# (slow to import) dateutil is only needed for the other forms.
_ISO = re.compile(r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?)?(?:Z|[+-]\d\d:\d\d)?")


class TimestampError(ValueError):
    pass


class TimestampRangeError(RuntimeError):
    pass


def parse(value: Any) -> datetime:
    """botocore's parse_timestamp: the result may be naive (no zone in the text)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return _from_epoch(value, value)
    if not isinstance(value, str):
        raise TimestampError(f"Invalid timestamp {value!r}")
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        try:
            return _from_epoch(number, value)
        except ValueError:  # NaN: not a number after all, try it as text
            pass
    if _ISO.fullmatch(value):
        return datetime.fromisoformat(value)
    from dateutil import parser as dateparser  # type: ignore[import-untyped]
    from dateutil.tz import tzutc  # type: ignore[import-untyped]

    try:
        parsed: datetime = dateparser.parse(value, tzinfos={"GMT": tzutc()})
        return parsed
    except (OverflowError, OSError) as exc:
        # botocore's last resort fails the same way for these (not a validation error).
        raise TimestampRangeError(
            f'Unable to calculate correct timezone offset for "{value}"'
        ) from exc
    except (ValueError, TypeError) as exc:
        raise TimestampError(f'Invalid timestamp "{value}": {exc}') from exc


def _from_epoch(value: float, text: Any) -> datetime:
    # Local zone, as botocore's tzlocal(); the wire form converts to UTC anyway.
    try:
        return datetime.fromtimestamp(value, UTC).astimezone()
    except (OverflowError, OSError) as exc:
        # botocore gives up with this error (not a validation error) for out-of-range epochs.
        raise TimestampRangeError(
            f'Unable to calculate correct timezone offset for "{text}"'
        ) from exc


def to_aware_utc(value: Any) -> datetime:
    dt = parse(value)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def to_wire(value: Any) -> str:
    dt = to_aware_utc(value)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def is_timestamp(value: Any) -> bool:
    if isinstance(value, datetime):
        return True
    if isinstance(value, bool):
        return True
    try:
        parse(value)
    except (TimestampError, ValueError, OverflowError, OSError):
        return False
    return True


def render_iso8601(value: Any) -> Any:
    try:
        return parse(value).isoformat()
    except (TimestampError, TimestampRangeError, ValueError, OverflowError, OSError):
        return value
