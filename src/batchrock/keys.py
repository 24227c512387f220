"""``batchrock keys``: create, rotate, delete and list the keys of the credentials file.

    batchrock keys create --account 111111111111 [--user alice] [--action bedrock:List*]...
    batchrock keys rotate AKIA...        # new id and secret in place of the old pair
    batchrock keys delete AKIA...
    batchrock keys create-api-key --account 111111111111 [--user ci] [--action ...]
    batchrock keys delete-api-key BedrockAPIKey-xxxx
    batchrock keys list

The file is ``--credentials-file`` (or ``BATCHROCK_CREDENTIALS_FILE``, or the config file's
``credentials_file``). A new secret is printed once, as ``aws iam create-access-key`` prints
one; the file keeps it (the server needs it to check signatures), so the file stays private.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchrock import settings as settings_mod
from batchrock.access import keyfile
from batchrock.access.credfile import (
    ACCOUNT_ID,
    USER_NAME,
    CredentialsFileError,
    LiveDirectory,
)
from batchrock.access.permissions import ACTION_PATTERN
from batchrock.cli.main import ADMIN_COMMANDS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchrock keys", description=ADMIN_COMMANDS["keys"])
    parser.add_argument("--credentials-file", help="[env BATCHROCK_CREDENTIALS_FILE]")
    parser.add_argument("--config-file", help="[env BATCHROCK_CONFIG_FILE]")
    commands = parser.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create", help="Add an access key (SigV4) to an account.")
    _owner_flags(create)
    create.add_argument(
        "--bucket",
        action="append",
        metavar="PATTERN",
        help="Also grant the account buckets matching PATTERN (repeatable).",
    )
    rotate = commands.add_parser("rotate", help="Replace an access key with a new id and secret.")
    rotate.add_argument("access_key_id")
    delete = commands.add_parser("delete", help="Remove an access key.")
    delete.add_argument("access_key_id")
    api = commands.add_parser("create-api-key", help="Add a Bedrock API key (bearer token).")
    _owner_flags(api)
    delete_api = commands.add_parser("delete-api-key", help="Remove a Bedrock API key.")
    delete_api.add_argument("key_id", help="As `keys list` shows it (BedrockAPIKey-xxxx).")
    commands.add_parser("list", help="Show accounts and keys (never secrets).")
    return parser


def _owner_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", required=True, help="12-digit account id")
    parser.add_argument("--user", help="IAM user name the key acts as (default: the account)")
    parser.add_argument(
        "--action",
        action="append",
        metavar="ACTION",
        help="Allow only these IAM actions, e.g. bedrock:ListModelInvocationJobs (repeatable).",
    )


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        path = _credentials_path(args)
        return _run(args, path)
    except (keyfile.KeyFileError, CredentialsFileError, settings_mod.SettingsError) as exc:
        print(f"batchrock keys: {exc}", file=sys.stderr)
        return 1


def _credentials_path(args: argparse.Namespace) -> Path:
    loaded = settings_mod.load(
        {"credentials_file": args.credentials_file, "config_file": args.config_file}
    )
    if loaded.credentials_file is None:
        raise settings_mod.SettingsError(
            "no credentials file: give --credentials-file FILE or set BATCHROCK_CREDENTIALS_FILE"
        )
    return loaded.credentials_file


def _check_owner(args: argparse.Namespace) -> None:
    if not ACCOUNT_ID.fullmatch(args.account):
        raise keyfile.KeyFileError(f"--account {args.account!r} is not a 12-digit account id")
    if args.user is not None and not USER_NAME.fullmatch(args.user):
        raise keyfile.KeyFileError(f"--user {args.user!r} is not an IAM user name")
    for action in args.action or ():
        if not ACTION_PATTERN.fullmatch(action):
            raise keyfile.KeyFileError(f"--action {action!r} is not an IAM action")


def _run(args: argparse.Namespace, path: Path) -> int:
    if args.command == "list":
        _list(path)
        return 0
    if args.command == "create":
        _check_owner(args)
        key = keyfile.edit(path, keyfile.add_key(args.account, args.user, args.action, args.bucket))
        _print_key(key, path)
    elif args.command == "rotate":
        key = keyfile.edit(path, keyfile.rotate_key(args.access_key_id))
        _print_key(key, path)
        print(
            f"{args.access_key_id} no longer works once the server re-reads {path}.",
            file=sys.stderr,
        )
    elif args.command == "delete":
        account = keyfile.edit(path, keyfile.delete_key(args.access_key_id))
        print(f"Deleted access key {args.access_key_id} of account {account}.", file=sys.stderr)
    elif args.command == "create-api-key":
        _check_owner(args)
        api_key = keyfile.edit(path, keyfile.add_api_key(args.account, args.user, args.action))
        _print(
            {
                "ApiKey": {
                    "AccountId": api_key.account_id,
                    "ApiKeyId": api_key.key_id,
                    "UserName": api_key.user,
                    "Token": api_key.token,
                    "CreateDate": _now(),
                }
            }
        )
        print(
            "The token is shown once; clients send it with AWS_BEARER_TOKEN_BEDROCK, over HTTPS.",
            file=sys.stderr,
        )
    else:  # delete-api-key
        account = keyfile.edit(path, keyfile.delete_api_key(args.key_id))
        print(f"Deleted API key {args.key_id} of account {account}.", file=sys.stderr)
    return 0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _print(value: dict[str, Any]) -> None:
    print(json.dumps(value, indent=4))


def _print_key(key: keyfile.NewKey, path: Path) -> None:
    # The shape of `aws iam create-access-key`, plus the account.
    _print(
        {
            "AccessKey": {
                "AccountId": key.account_id,
                "UserName": key.user,
                "AccessKeyId": key.access_key_id,
                "Status": "Active",
                "SecretAccessKey": key.secret_access_key,
                "CreateDate": _now(),
            }
        }
    )
    print(f"The secret is shown once here (and kept in {path}).", file=sys.stderr)


def _list(path: Path) -> None:
    directory = LiveDirectory(path).current()
    rows = [("ACCOUNT", "KIND", "ID", "USER", "ACTIONS")]
    for account in directory.accounts:
        for key in account.keys:
            actions = ",".join(key.actions) if key.actions is not None else "*"
            rows.append((account.id, "access-key", key.access_key_id, key.user or "", actions))
        for api_key in account.api_keys:
            actions = ",".join(api_key.actions) if api_key.actions is not None else "*"
            key_id = keyfile.api_key_id(api_key.token)
            rows.append((account.id, "api-key", key_id, api_key.user or "", actions))
        if not account.keys and not account.api_keys:
            rows.append((account.id, "-", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    buckets = [(a.id, ", ".join(a.buckets)) for a in directory.accounts if a.buckets]
    for account_id, patterns in buckets:
        print(f"buckets of {account_id}: {patterns}")
