"""Every setting of the service, declared once.

Precedence, lowest first: defaults < config file (TOML) < environment (``BATCHROCK_<NAME>``)
< command-line flags. :func:`load` builds the one :class:`Settings` object at the edge
(``batchrock serve`` / ``batchrock worker``) and everything else receives it.

``docs/settings.md`` documents each entry; a test fails when one is missing there.
"""

from __future__ import annotations

import dataclasses
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


def _meta(help: str, env: bool = True) -> dict[str, Any]:
    return {"help": help, "env": env}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The service's configuration. Field docs are the documentation (see docs/settings.md)."""

    host: str = field(default="127.0.0.1", metadata=_meta("Address the API listens on."))
    port: int = field(default=8765, metadata=_meta("Port the API listens on."))
    data_dir: Path = field(
        default_factory=default_data_dir,
        metadata=_meta("Folder holding everything the service keeps (database, local S3)."),
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
        default=1024 * 1024, metadata=_meta("Largest request body the API accepts.")
    )
    default_page_size: int = field(
        default=100, metadata=_meta("Page size of ListModelInvocationJobs without maxResults.")
    )
    log_level: str = field(default="info", metadata=_meta("Log level: debug, info, warning."))
    engine: bool = field(
        default=True,
        metadata=_meta("Run jobs inside `batchrock serve` (--no-engine: API only, for workers)."),
    )
    config_file: Path | None = field(
        default=None, metadata=_meta("TOML file to read settings from (see docs/settings.md).")
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
        default=4, metadata=_meta("Jobs one engine (serve or worker process) runs at a time.")
    )
    engine_record_concurrency: int = field(
        default=64, metadata=_meta("Records of one job sent to the model at the same time.")
    )
    engine_poll_seconds: float = field(
        default=0.5, metadata=_meta("How often an idle engine looks for new or stopped jobs.")
    )
    engine_lease_seconds: float = field(
        default=30.0,
        metadata=_meta("How long a job stays with a silent worker before another takes it over."),
    )
    engine_checkpoint_seconds: float = field(
        default=0.5,
        metadata=_meta("How often a running job saves its counters and resume point."),
    )
    # --- quotas (Bedrock's defaults) ---------------------------------------------------------
    quota_min_records_per_job: int = field(
        default=100, metadata=_meta("Minimum number of records per batch inference job.")
    )
    quota_max_records_per_job: int = field(
        default=50_000, metadata=_meta("Maximum number of records per batch inference job.")
    )
    quota_max_records_per_file: int = field(
        default=50_000, metadata=_meta("Maximum number of records per input file.")
    )
    quota_max_file_bytes: int = field(
        default=1024**3, metadata=_meta("Largest input file, in bytes (1 GiB).")
    )
    quota_max_job_bytes: int = field(
        default=5 * 1024**3, metadata=_meta("Largest total input of one job, in bytes (5 GiB).")
    )
    quota_max_unfinished_jobs_per_model: int = field(
        default=20,
        metadata=_meta("Unfinished jobs per account, region and model; more: Create is refused."),
    )
    quota_max_concurrent_jobs_per_model: int = field(
        default=10,
        metadata=_meta("Jobs per account and model InProgress at once; the rest wait Scheduled."),
    )
    # --- object storage ------------------------------------------------------------------
    object_store: str = field(
        default="local",
        metadata=_meta("'local' (s3://bucket/key is DATA_DIR/s3/bucket/key) or 's3'."),
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
    time_scale: float = field(
        default=1.0,
        metadata=_meta("Speed-up of the service clock for timeouts and expiry (3600: 1 h = 1 s)."),
    )
    # --- model backends (see docs/models.md) ------------------------------------------------
    models_config: Path | None = field(
        default=None,
        metadata=_meta("TOML file routing model ids to backends (see docs/models.md)."),
    )
    builtin_fallback: bool = field(
        default=True,
        metadata=_meta("Answer model ids that no route matches with the built-in model."),
    )
    builtin_latency_ms: float = field(
        default=0.0, metadata=_meta("Built-in model: time each record takes, in milliseconds.")
    )
    builtin_error_rate: float = field(
        default=0.0,
        metadata=_meta("Built-in model: share of records (0-1) that fail with errorCode 500."),
    )
    builtin_throttle_rate: float = field(
        default=0.0,
        metadata=_meta("Built-in model: chance (0-1) that an attempt is throttled (429)."),
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
    """Turn a string (env, flag) or TOML value into the field's type."""
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
        raise ValueError(f"{f.name}: expected true or false, got {raw!r}")
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if "Path" in kind:
        return Path(str(raw)).expanduser()
    if kind.startswith("tuple"):
        if isinstance(raw, list | tuple):
            return tuple(str(x) for x in raw)
        return tuple(x.strip() for x in str(raw).split(",") if x.strip())
    return raw


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

    for name, f in by_name.items():
        if f.metadata.get("env", True) and env_name(name) in env:
            values[name] = env[env_name(name)]
    values.update({k: v for k, v in flags.items() if k in by_name})

    coerced: dict[str, Any] = {}
    for name, raw in values.items():
        try:
            coerced[name] = _coerce(by_name[name], raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"setting {name}: {exc}") from exc
    return Settings(**coerced)
