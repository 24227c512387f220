"""Configuration as AWS CLI v2 reads it: flags, ``AWS_*`` variables, ``~/.aws/config`` and
``~/.aws/credentials``, profiles and ``[services]`` sections.

Precedence, highest first: command-line flag, environment variable, profile setting, default.
The files are parsed here with the same INI rules as botocore (``[profile x]`` sections,
indented sub-sections for ``s3 =`` style nesting, ``#``/``;`` comments).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from batchrock.cli.errors import (
    CliError,
    ConfigurationError,
    NoRegionError,
    ParamValidationError,
    ProfileNotFound,
)

#: Where ``batchrock serve`` listens by default (Settings.host / Settings.port).
DEFAULT_ENDPOINT = "http://127.0.0.1:8765"
SERVICE_ENV = "BEDROCK"
SERVICE_KEY = "bedrock"

Section = dict[str, Any]

# botocore's check on region names (they become part of host names and signatures).
_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?")


class ConfigParseError(CliError):
    def __init__(self, path: str) -> None:
        super().__init__(f"Unable to parse config file: {path}")


def read_ini(path: str) -> dict[str, Section]:
    """botocore's raw config parsing: RawConfigParser (so the same files parse, and the same
    files fail), plus one level of nesting for values that start on the next line
    (``s3 =`` / ``  key = value``). A missing file is empty."""
    import configparser

    path = os.path.expanduser(os.path.expandvars(path))
    if not os.path.isfile(path):
        return {}
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (configparser.Error, UnicodeDecodeError, OSError) as exc:
        raise ConfigParseError(path) from exc
    sections: dict[str, Section] = {}
    for name in parser.sections():
        section: Section = {}
        for option in parser.options(name):
            value = parser.get(name, option)
            if value.startswith("\n"):
                nested: dict[str, str] = {}
                for line in value.splitlines():
                    line = line.strip()
                    if not line:
                        continue
                    if "=" not in line:
                        raise ConfigParseError(path)
                    key, _, inner = line.partition("=")
                    nested[key.strip()] = inner.strip()
                section[option] = nested
            else:
                section[option] = value
        sections[name] = section
    return sections


def _truthy(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "true"


class Config:
    def __init__(
        self,
        env: Mapping[str, str],
        profile: str,
        explicit_profile: bool,
        profiles: dict[str, Section] | None = None,
        services: dict[str, Section] | None = None,
        profile_flag: bool = False,
    ) -> None:
        self.env = env
        # --profile (not AWS_PROFILE) makes botocore ignore credentials in the environment.
        self.profile_flag = profile_flag
        self.profile = profile
        self.explicit_profile = explicit_profile
        self.profiles = profiles or {}
        self.services = services or {}
        self._credentials: dict[str, Section] | None = None
        self._credentials_path = "~/.aws/credentials"

    @classmethod
    def load(cls, env: Mapping[str, str], profile_flag: str | None) -> Config:
        profile = profile_flag or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
        config_path = env.get("AWS_CONFIG_FILE") or "~/.aws/config"
        creds_path = env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
        raw = read_ini(config_path)
        profiles: dict[str, Section] = {}
        services: dict[str, Section] = {}
        for name, section in raw.items():
            if name == "default":
                profiles["default"] = section
            elif name.startswith("profile"):
                parts = name.split(None, 1)
                if len(parts) == 2 and parts[0] == "profile":
                    profiles[parts[1].strip().strip('"')] = section
            elif name.startswith("services"):
                parts = name.split(None, 1)
                if len(parts) == 2:
                    services[parts[1].strip()] = section
        config = cls(
            env=env,
            profile=profile or "default",
            explicit_profile=bool(profile),
            profiles=profiles,
            services=services,
            profile_flag=bool(profile_flag),
        )
        config._credentials_path = creds_path
        # botocore merges the credentials file into its profile map when it loads its
        # configuration, so a broken credentials file fails every command there too.
        _ = config.credentials
        return config

    @property
    def credentials(self) -> dict[str, Section]:
        """The shared credentials file (sections are profile names)."""
        if self._credentials is None:
            self._credentials = read_ini(self._credentials_path)
        return self._credentials

    def check_profile(self) -> None:
        if (
            self.explicit_profile
            and self.profile not in self.profiles
            and self.profile not in self.credentials
        ):
            raise ProfileNotFound(self.profile)

    def get(self, key: str) -> Any:
        return self.profiles.get(self.profile, {}).get(key)

    # --- individual settings ---------------------------------------------------------

    def region(self, flag: str | None) -> str:
        region = flag or self.env.get("AWS_REGION") or self.env.get("AWS_DEFAULT_REGION")
        region = region or self.get("region")
        if not region or not isinstance(region, str):
            raise NoRegionError()
        if not _REGION.fullmatch(region):
            raise CliError(f"Provided region_name '{region}' doesn't match a supported format.")
        return region

    def output(self, flag: str | None) -> str:
        value = flag or self.env.get("AWS_DEFAULT_OUTPUT") or self.get("output") or "json"
        return str(value)

    def timestamp_format(self) -> str:
        value = self.get("cli_timestamp_format") or "iso8601"
        if value not in ("wire", "iso8601"):
            raise ConfigurationError(
                f'Unknown cli_timestamp_format value: {value}, valid values are "wire" or "iso8601"'
            )
        return str(value)

    def pager(self) -> str:
        if "AWS_PAGER" in self.env:
            return self.env["AWS_PAGER"]
        configured = self.get("cli_pager")
        if isinstance(configured, str):
            return configured
        return self.env.get("PAGER", "less")

    def error_format(self, flag: str | None) -> str:
        value = flag or self.env.get("AWS_CLI_ERROR_FORMAT") or self.get("cli_error_format")
        return str(value or "enhanced")

    def auto_prompt(self) -> str:
        value = self.env.get("AWS_CLI_AUTO_PROMPT") or self.get("cli_auto_prompt") or "off"
        return str(value)

    def max_attempts(self) -> int:
        """Attempts per call (standard retry mode: 3), as botocore validates them."""
        mode = self.env.get("AWS_RETRY_MODE") or self.get("retry_mode") or "standard"
        if mode not in ("standard", "adaptive"):
            raise CliError(
                f'Invalid value provided to "mode": "{mode}" must be one of: '
                '"standard" or "adaptive"'
            )
        raw = self.env.get("AWS_MAX_ATTEMPTS") or self.get("max_attempts")
        if raw is None:
            return 3
        try:
            value = int(raw)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        if value < 1:
            raise CliError(
                f'Value provided to "max_attempts": {value} must be an integer greater than '
                "or equal to one."
            )
        return value

    def ca_bundle(self, flag: str | None) -> str | None:
        value = flag or self.env.get("AWS_CA_BUNDLE") or self.get("ca_bundle")
        return str(value) if value else None

    def endpoint(self, flag: str | None) -> str:
        if flag is not None:
            if not urlsplit(flag).scheme:
                raise ParamValidationError(
                    f'Bad value for --endpoint-url "{flag}": scheme is missing.  '
                    "Must be of the form http://<hostname>/ or https://<hostname>/"
                )
            return _valid_endpoint(flag)
        ignore = self.env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        if ignore is None:
            ignore = self.get("ignore_configured_endpoint_urls")
        if not _truthy(ignore):
            for name in (f"AWS_ENDPOINT_URL_{SERVICE_ENV}", "AWS_ENDPOINT_URL"):
                if self.env.get(name):
                    return _valid_endpoint(self.env[name])
            services_name = self.get("services")
            if isinstance(services_name, str):
                sub = self.services.get(services_name, {}).get(SERVICE_KEY)
                if isinstance(sub, dict) and sub.get("endpoint_url"):
                    return _valid_endpoint(str(sub["endpoint_url"]))
            if isinstance(self.get("endpoint_url"), str):
                return _valid_endpoint(str(self.get("endpoint_url")))
        return DEFAULT_ENDPOINT


_HOST_LABELS = re.compile(r"((?!-)[A-Za-z\d-]{1,63}(?<!-)\.)*((?!-)[A-Za-z\d-]{1,63}(?<!-))")


def _valid_endpoint(url: str) -> str:
    """botocore's check: a host name made of DNS labels, or an IPv6 literal."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if host and len(host) <= 255:
        if ":" in host:
            import ipaddress

            try:
                ipaddress.IPv6Address(host.split("%")[0])
                return url
            except ValueError:
                pass
        elif _HOST_LABELS.fullmatch(host.rstrip(".") if host != "." else host):
            return url
    raise CliError(f"Invalid endpoint: {url}")


def parse_timeout(raw: str | None, kind: str) -> float | None:
    """``--cli-read-timeout``/``--cli-connect-timeout``: seconds; 0 means no timeout."""
    if raw is None:
        return 60.0
    try:
        value = int(raw)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if value < 0:
        raise CliError(
            f"Attempted to set {kind} timeout to {value}, but the timeout cannot be set to a "
            "value less than or equal to 0."
        )
    return None if value == 0 else float(value)
