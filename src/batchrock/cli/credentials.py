"""Credentials: a fast path for static keys, botocore's full provider chain for the rest.

The fast path covers what most users have (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or
keys in the shared files) and follows botocore's order for them. A profile that names any
other source (assume-role, web identity, SSO, ``credential_process``), container or instance
credentials, or no credentials found at all, are handed to botocore's own resolver, so every
source AWS CLI v2 supports still works.
"""

from __future__ import annotations

from typing import NamedTuple

from batchrock.cli.config import Config

# Profile keys that make botocore pick a provider placed before the shared credentials file.
_DELEGATED_KEYS = (
    "role_arn",
    "web_identity_token_file",
    "sso_start_url",
    "sso_session",
    "sso_account_id",
    "credential_process",
    "login_session",
)


_ENV_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


def resolve(cfg: Config) -> Credentials | None:
    env = cfg.env
    if cfg.profile_flag:
        # An explicit --profile takes botocore's environment provider out of the chain.
        env = {k: v for k, v in env.items() if k not in _ENV_KEYS}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None,
        )
    profile = cfg.profiles.get(cfg.profile, {})
    # Half a key pair in the environment is an error botocore reports; let it.
    partial_env = bool(env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_SECRET_ACCESS_KEY"))
    delegated = (
        partial_env
        or any(k in profile for k in _DELEGATED_KEYS)
        or env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    )
    if not delegated:
        for source in (cfg.credentials.get(cfg.profile, {}), profile):
            key, secret = source.get("aws_access_key_id"), source.get("aws_secret_access_key")
            if isinstance(key, str) and isinstance(secret, str) and key and secret:
                token = source.get("aws_session_token") or source.get("aws_security_token")
                return Credentials(key, secret, token if isinstance(token, str) else None)
    return _botocore_chain(cfg)


def _botocore_chain(cfg: Config) -> Credentials | None:
    import botocore.session

    session = botocore.session.Session(profile=cfg.profile if cfg.profile_flag else None)
    found = session.get_credentials()
    if found is None:
        return None
    frozen = found.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)
