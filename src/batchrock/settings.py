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
    config_file: Path | None = field(
        default=None, metadata=_meta("TOML file to read settings from (see docs/settings.md).")
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
