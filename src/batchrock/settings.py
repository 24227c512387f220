"""Every setting of the service, declared once.

Precedence, lowest first: defaults < config file (TOML) < environment (``BATCHROCK_<NAME>``)
< command-line flags. :func:`load` builds the one :class:`Settings` object at the edge
(``batchrock serve`` / ``batchrock worker``) and everything else receives it.

``docs/settings.md`` documents each entry; a test fails when one is missing there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "BATCHROCK_"


def default_data_dir() -> Path:
    """Per-user data folder: ``$XDG_DATA_HOME/batchrock`` or ``~/.local/share/batchrock``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "batchrock"


def _meta(
    help: str,
    env: bool = True,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """A field's documentation and the values it accepts (checked by :func:`load`): numbers
    within ``low``..``high`` (inclusive), strings among ``choices``."""
    return {"help": help, "env": env, "low": low, "high": high, "choices": choices}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The service's configuration. Field docs are the documentation (see docs/settings.md)."""

    host: str = field(default="127.0.0.1", metadata=_meta("Address the API listens on."))
    port: int = field(default=8765, metadata=_meta("Port the API listens on.", low=0, high=65535))
    data_dir: Path = field(
        default_factory=default_data_dir,
        metadata=_meta("Folder holding everything the service keeps (database, local S3)."),
    )
    database_url: str | None = field(
        default=None,
        metadata=_meta(
            "PostgreSQL URL (postgresql://...) of a store shared by every process; "
            "unset: SQLite in the data dir."
        ),
    )
    default_region: str = field(
        default="us-east-1",
        metadata=_meta("Region used when a request carries no SigV4 credential scope."),
    )
    default_account_id: str = field(
        default="123456789012",
        metadata=_meta("Account used for requests whose access key is not a 12-digit number."),
    )
    max_body_bytes: int = field(
        default=1024 * 1024, metadata=_meta("Largest request body the API accepts.", low=1)
    )
    max_head_bytes: int = field(
        default=16 * 1024,
        metadata=_meta("Largest request line plus headers the API accepts.", low=1024),
    )
    http_keepalive_timeout_seconds: float = field(
        default=5.0,
        metadata=_meta(
            "Seconds a connection may stay idle before the server closes it.", low=0.001
        ),
    )
    http_client_timeout_seconds: float = field(
        default=10.0,
        metadata=_meta(
            "Seconds a client has to send a whole request once it starts, or to read a response.",
            low=0.001,
        ),
    )
    bad_request_log_seconds: float = field(
        default=60.0,
        metadata=_meta(
            "Window for the lines about bad request heads, connections refused 429, wrong"
            " signatures and refused console sign-ins: a few logged, the rest summed up.",
            low=0.01,
        ),
    )
    http_max_connections: int = field(
        default=512,
        metadata=_meta("Connections open at once; past it the longest-idle one is closed.", low=1),
    )
    api_processes: int = field(
        default=1,
        metadata=_meta(
            "Processes serving the API of `batchrock serve` on its one port; 0: one per CPU.",
            low=0,
            high=256,
        ),
    )
    wrong_signatures_per_address: int = field(
        default=50,
        metadata=_meta(
            "Wrong signatures (any keys) from one address within 5 minutes, then 429"
            " (0: no per-address bound).",
            low=0,
        ),
    )
    default_page_size: int = field(
        default=100,
        metadata=_meta(
            "Page size of ListModelInvocationJobs without maxResults.", low=1, high=1000
        ),
    )
    summary_cache_jobs: int = field(
        default=10_000,
        metadata=_meta(
            "Jobs whose encoded summary the API keeps for Get and List (0: none).", low=0
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_meta(
            "Log level: debug, info, warning, error.",
            choices=("debug", "info", "warning", "error"),
        ),
    )
    log_format: str = field(
        default="text",
        metadata=_meta(
            'Log lines as text or as one JSON object each (docs/events.md, "Logs").',
            choices=("text", "json"),
        ),
    )
    event_loop: str = field(
        default="auto",
        metadata=_meta(
            "Event loop of serve and worker: auto (uvloop when installed), uvloop, asyncio.",
            choices=("auto", "uvloop", "asyncio"),
        ),
    )
    engine: bool = field(
        default=True,
        metadata=_meta("Run jobs inside `batchrock serve` (--no-engine: API only, for workers)."),
    )
    config_file: Path | None = field(
        default=None, metadata=_meta("TOML file to read settings from (see docs/settings.md).")
    )
    private_files: bool = field(
        default=True,
        metadata=_meta("Keep the data dir 0700 and its files 0600 (false: the umask decides)."),
    )
    # --- access (see docs/access.md) ---------------------------------------------------------
    credentials_file: Path | None = field(
        default=None,
        metadata=_meta(
            "TOML file of accounts and keys; set, requests must be signed; unset: open."
        ),
    )
    tls_cert: Path | None = field(
        default=None, metadata=_meta("PEM certificate (chain) to serve HTTPS with.")
    )
    tls_key: Path | None = field(default=None, metadata=_meta("PEM private key of --tls-cert."))
    allowed_hosts: tuple[str, ...] = field(
        default=(),
        metadata=_meta("Extra Host names the API answers to (proxies); '*' turns the check off."),
    )
    metrics_port: int = field(
        default=0,
        metadata=_meta(
            "Port a `batchrock worker` serves GET /metrics on (at --host); 0: none.",
            low=0,
            high=65535,
        ),
    )
    metrics_public: bool = field(
        default=False,
        metadata=_meta(
            "Serve /metrics without signing in on a server with a credentials file that "
            "listens beyond loopback."
        ),
    )
    rate_limit_per_second: float = field(
        default=0.0,
        metadata=_meta("API requests per second per account (token bucket); 0: no limit."),
    )
    rate_limit_burst: int = field(
        default=0,
        metadata=_meta("Requests an account may make at once above the rate; 0: one second's."),
    )
    # --- engine (job runner) ---------------------------------------------------------------
    engine_max_jobs: int = field(
        default=4,
        metadata=_meta("Jobs one engine (serve or worker process) runs at a time.", low=1),
    )
    engine_record_concurrency: int = field(
        default=64,
        metadata=_meta("Records of one job sent to the model at the same time.", low=1),
    )
    engine_processes: int = field(
        default=0,
        metadata=_meta(
            "Worker processes that answer the records of remote model routes (openai, "
            "bedrock) for the engine, a block of a job's lines at a time; 0: as many as the "
            "CPUs this process may use; 1: none, the engine process answers them itself.",
            low=0,
            high=256,
        ),
    )
    engine_offload_load: float = field(
        default=0.8,
        metadata=_meta(
            "How busy the engine process's event loop must be (its share of one core) before "
            "records of remote routes go to the worker processes (engine_processes), if its "
            "CPUs have half a core idle for them; otherwise the engine answers them itself; "
            "0: every such record goes to the workers.",
            low=0,
            high=1,
        ),
    )
    engine_poll_seconds: float = field(
        default=0.5,
        metadata=_meta("How often an idle engine looks for new or stopped jobs.", low=0.001),
    )
    engine_sweep_seconds: float = field(
        default=5.0,
        metadata=_meta(
            "With PostgreSQL (engines woken by NOTIFY): how often an idle engine looks anyway.",
            low=0.001,
        ),
    )
    engine_lease_seconds: float = field(
        default=30.0,
        metadata=_meta(
            "How long a job stays with a silent worker before another takes it over.", low=0.001
        ),
    )
    engine_checkpoint_seconds: float = field(
        default=0.5,
        metadata=_meta("How often a running job saves its counters and resume point.", low=0.001),
    )
    engine_min_submitted_seconds: float = field(
        default=1.0,
        metadata=_meta("How long a new job stays Submitted before validation starts.", low=0),
    )
    # --- quotas (Bedrock's defaults) ---------------------------------------------------------
    quota_min_records_per_job: int = field(
        default=100, metadata=_meta("Minimum number of records per batch inference job.", low=0)
    )
    quota_max_records_per_job: int = field(
        default=50_000,
        metadata=_meta("Maximum number of records per batch inference job.", low=1),
    )
    quota_max_records_per_file: int = field(
        default=50_000, metadata=_meta("Maximum number of records per input file.", low=1)
    )
    quota_max_file_bytes: int = field(
        default=1024**3, metadata=_meta("Largest input file, in bytes (1 GiB).", low=1)
    )
    quota_max_job_bytes: int = field(
        default=5 * 1024**3,
        metadata=_meta("Largest total input of one job, in bytes (5 GiB).", low=1),
    )
    quota_max_unfinished_jobs_per_model: int = field(
        default=20,
        metadata=_meta("Unfinished jobs per account, region and model; more: Create is refused."),
    )
    quota_max_concurrent_jobs_per_model: int = field(
        default=10,
        metadata=_meta(
            "Jobs per account and model InProgress at once; the rest wait Scheduled.", low=1
        ),
    )
    fail_on_duplicate_record_ids: bool = field(
        default=False,
        metadata=_meta("Fail a job whose input repeats a recordId (default: log it and go on)."),
    )
    # --- job state-change events (see docs/events.md) --------------------------------------
    events_webhook_url: str | None = field(
        default=None,
        metadata=_meta("URL every job state-change event is POSTed to; unset: no webhook."),
    )
    events_webhook_secret: str | None = field(
        default=None,
        repr=False,
        metadata=_meta("Key of the webhook's HMAC-SHA256 signature header; unset: unsigned."),
    )
    events_jsonl_path: Path | None = field(
        default=None,
        metadata=_meta("File every job state-change event is appended to; unset: none."),
    )
    events_eventbridge_bus: str | None = field(
        default=None,
        metadata=_meta("EventBridge bus (name or ARN) events are put on; unset: none."),
    )
    events_eventbridge_endpoint_url: str | None = field(
        default=None,
        metadata=_meta("EventBridge-compatible endpoint; unset: AWS EventBridge itself."),
    )
    events_eventbridge_region: str | None = field(
        default=None, metadata=_meta("Region of the EventBridge bus; unset: default_region.")
    )
    events_eventbridge_source: str = field(
        default="aws.bedrock",
        metadata=_meta("Source of the events put on the bus (AWS refuses 'aws.' sources)."),
    )
    events_timeout_seconds: float = field(
        default=10.0,
        metadata=_meta("Longest wait for a sink to take one delivery.", low=0.001),
    )
    events_retry_initial_seconds: float = field(
        default=1.0,
        metadata=_meta("Wait before a failed delivery's first retry (doubling).", low=0.001),
    )
    events_retry_max_seconds: float = field(
        default=60.0,
        metadata=_meta("Longest wait between retries of a failed delivery.", low=0.001),
    )
    events_poll_seconds: float = field(
        default=0.5,
        metadata=_meta("How often an idle sink looks for new events.", low=0.001),
    )
    # --- the OpenAI-compatible Files and Batch API (docs/openai.md) -------------------------
    openai_max_file_bytes: int = field(
        default=200 * 1024**2,
        metadata=_meta("Largest file POST /v1/files accepts, in bytes (OpenAI's 200 MB).", low=1),
    )
    openai_max_requests_per_batch: int = field(
        default=50_000,
        metadata=_meta("Most requests one /v1/batches input file may hold.", low=1),
    )
    files_bucket_prefix: str = field(
        default="batchrock-files",
        metadata=_meta(
            "Uploaded files and batch results of account A live in bucket PREFIX-A of the "
            "object store."
        ),
    )
    # --- object storage ------------------------------------------------------------------
    object_store: str = field(
        default="local",
        metadata=_meta(
            "'local' (s3://bucket/key is DATA_DIR/s3/bucket/key) or 's3'.", choices=("local", "s3")
        ),
    )
    s3_endpoint_url: str | None = field(
        default=None,
        metadata=_meta("S3-compatible endpoint (MinIO, moto); unset means AWS S3 itself."),
    )
    s3_region: str = field(default="us-east-1", metadata=_meta("Region of the S3 service."))
    s3_access_key_id: str | None = field(
        default=None, metadata=_meta("S3 access key; unset: AWS_ACCESS_KEY_ID and friends.")
    )
    s3_secret_access_key: str | None = field(
        default=None, metadata=_meta("S3 secret key; unset: AWS_SECRET_ACCESS_KEY.")
    )
    s3_virtual_hosted_style: bool = field(
        default=False,
        metadata=_meta("Address a custom endpoint as bucket.host instead of host/bucket."),
    )
    s3_part_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata=_meta(
            "Output per part of the S3 upload that checkpoints a file in progress.",
            low=5 * 1024 * 1024,  # S3's smallest part but the last
        ),
    )
    object_read_timeout_seconds: float = field(
        default=60.0,
        metadata=_meta("Longest wait for data from the object store before a read fails."),
    )
    time_scale: float = field(
        default=1.0,
        metadata=_meta(
            "Speed-up of the service clock for timeouts and expiry (3600: 1 h = 1 s).", low=1e-6
        ),
    )
    # --- model backends (see docs/models.md) ------------------------------------------------
    models_config: Path | None = field(
        default=None,
        metadata=_meta("TOML file routing model ids to backends (see docs/models.md)."),
    )
    allow_any_model: bool = field(
        default=False,
        metadata=_meta(
            "Accept any modelId at Create, not only catalogued (docs/models.md) or routed ones."
        ),
    )
    builtin_fallback: bool = field(
        default=True,
        metadata=_meta("Answer model ids that no route matches with the built-in model."),
    )
    builtin_latency_ms: float = field(
        default=0.0,
        metadata=_meta("Built-in model: time each record takes, in milliseconds.", low=0),
    )
    builtin_error_rate: float = field(
        default=0.0,
        metadata=_meta(
            "Built-in model: share of records (0-1) that fail with errorCode 500.", low=0, high=1
        ),
    )
    builtin_throttle_rate: float = field(
        default=0.0,
        metadata=_meta(
            "Built-in model: chance (0-1) that an attempt is throttled (429).", low=0, high=1
        ),
    )
    builtin_seed: int = field(
        default=0, metadata=_meta("Built-in model: seed that varies its answers and draws.")
    )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "batchrock.sqlite3"

    def evolve(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def fields_table() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _coerce(f: dataclasses.Field[Any], raw: Any) -> Any:
    """Turn a string (env, flag) or TOML value into the field's type; ``ValueError`` says
    what was expected."""
    kind = str(f.type)
    if raw is None:
        return None
    if kind.startswith("bool"):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind.startswith("int"):
        try:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError
            return int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if kind.startswith("float"):
        try:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        return number
    if "Path" in kind:
        return Path(str(raw)).expanduser()
    if kind.startswith("tuple"):
        if isinstance(raw, list | tuple):
            return tuple(str(x) for x in raw)
        return tuple(x.strip() for x in str(raw).split(",") if x.strip())
    if kind.startswith("str") and not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    return raw


def _check_range(f: dataclasses.Field[Any], value: Any) -> Any:
    """``value`` if the field accepts it (see :func:`_meta`); ``ValueError`` otherwise."""
    if value is None:
        return value
    if f.name == "database_url":
        return _check_database_url(value)
    low, high, choices = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("choices")
    if choices is not None:
        if str(value).lower() not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return str(value).lower()
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"{value} is out of range ({low}-{high})")
    if low is not None and value < low:
        raise ValueError(f"{value} is too small (at least {low})")
    return value


def _check_database_url(value: str) -> str | None:
    """A PostgreSQL URL (``postgresql://`` or ``postgres://``), or empty for none."""
    if not value.strip():
        return None
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in {"postgresql", "postgres"}:
        raise ValueError("expected a postgresql:// URL (the password is not shown)")
    return value


class SettingsError(ValueError):
    """A setting could not be read (bad type, unknown key in the config file)."""


def load(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults < config file < env < flags.

    ``flags`` holds only the options the user actually gave (``None`` values are ignored).
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    by_name = {f.name: f for f in fields_table()}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each value came from, for error messages

    path = flags.get("config_file") or env.get(env_name("config_file")) or config_file
    if path:
        path = Path(path).expanduser()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {path}: {exc}") from exc
        section = data.get("batchrock", data)
        for key, raw in section.items():
            name = key.replace("-", "_")
            if name in by_name:
                values[name] = raw
            elif not isinstance(raw, dict):
                raise SettingsError(f"{path}: unknown setting {key!r}")
        values["config_file"] = path
        sources = dict.fromkeys(values, f"config file {path}")

    for name, f in by_name.items():
        if f.metadata.get("env", True) and env_name(name) in env:
            values[name] = env[env_name(name)]
            sources[name] = env_name(name)
    for name, raw in flags.items():
        if name in by_name:
            values[name] = raw
            sources[name] = "--" + name.replace("_", "-")

    coerced: dict[str, Any] = {}
    for name, raw in values.items():
        try:
            coerced[name] = _check_range(by_name[name], _coerce(by_name[name], raw))
        except (TypeError, ValueError) as exc:
            source = sources.get(name)
            where = f" ({source})" if source else ""
            raise SettingsError(f"setting {name}{where}: {exc}") from exc
    return Settings(**coerced)
