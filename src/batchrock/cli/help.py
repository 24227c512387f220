"""``help`` pages rendered as plain text from the model's documentation.

``batchrock help``, ``batchrock bedrock help`` and ``batchrock [bedrock] <operation> help``
print the same sections as the AWS CLI reference page (description, synopsis, options with
their types and allowed values, global options).
"""

from __future__ import annotations

import html
import re
import textwrap

from batchrock.cli import cliargs
from batchrock.cli.config import DEFAULT_ENDPOINT
from batchrock.cli.errors import PROG
from batchrock.cli.model import SERVICE_CLI_NAME, Operation, ServiceModel

_TAG = re.compile(r"<[^>]+>")
_BLOCK = re.compile(r"</?(p|li|ul|ol|note|important)[^>]*>", re.I)

GLOBAL_OPTIONS = [
    ("--debug", "boolean", "Turn on debug logging."),
    (
        "--endpoint-url",
        "string",
        f"Override command's default URL with the given URL (default {DEFAULT_ENDPOINT}, the "
        "local batchrock server, unless AWS_ENDPOINT_URL_BEDROCK, AWS_ENDPOINT_URL or the "
        "profile's endpoint_url says otherwise).",
    ),
    ("--no-verify-ssl", "boolean", "Do not verify SSL certificates."),
    ("--no-paginate", "boolean", "Disable automatic pagination (one call only)."),
    (
        "--output",
        "string",
        "The formatting style for command output: json, text, table, yaml, yaml-stream or off.",
    ),
    ("--query", "string", "A JMESPath query to use in filtering the response data."),
    ("--profile", "string", "Use a specific profile from your credential file."),
    ("--region", "string", "The region to use. Overrides config/env settings."),
    ("--version", "string", "Display the version of this tool."),
    ("--color", "string", "Turn on/off color output: on, off or auto."),
    ("--no-sign-request", "boolean", "Do not sign requests. Credentials will not be loaded."),
    ("--ca-bundle", "string", "The CA certificate bundle to use when verifying SSL certificates."),
    ("--cli-read-timeout", "int", "The maximum socket read time in seconds (0: no limit)."),
    ("--cli-connect-timeout", "int", "The maximum socket connect time in seconds (0: no limit)."),
    (
        "--cli-binary-format",
        "string",
        "The formatting style to be used for binary blobs: base64 or raw-in-base64-out.",
    ),
    ("--no-cli-pager", "boolean", "Disable cli pager for output."),
    ("--cli-auto-prompt", "boolean", "Automatically prompt for CLI input parameters."),
    ("--no-cli-auto-prompt", "boolean", "Disable automatically prompt for CLI input parameters."),
    (
        "--cli-error-format",
        "string",
        "The formatting style for error output: legacy, json, yaml, text, table or enhanced.",
    ),
]


def plain(doc: str) -> str:
    text = _BLOCK.sub("\n", doc or "")
    text = html.unescape(_TAG.sub("", text))
    paragraphs = [" ".join(p.split()) for p in text.split("\n")]
    return "\n\n".join(p for p in paragraphs if p)


def _wrap(text: str, indent: int) -> str:
    pad = " " * indent
    out = []
    for para in text.split("\n\n"):
        out.append(textwrap.fill(para, 79, initial_indent=pad, subsequent_indent=pad))
    return "\n\n".join(out)


def top_help(model: ServiceModel) -> str:
    lines = [
        f"{PROG}",
        "",
        "DESCRIPTION",
        _wrap(
            "The AWS-CLI-compatible command line of batchrock, a self-hosted Amazon Bedrock "
            "batch inference service. Commands and options mirror `aws bedrock ...`; each "
            f"operation is reachable as `{PROG} <operation>` and as "
            f"`{PROG} {SERVICE_CLI_NAME} <operation>`.",
            4,
        ),
        "",
        "SYNOPSIS",
        f"    {PROG} [options] <command> <subcommand> [parameters]",
        "",
        "AVAILABLE COMMANDS",
        f"    o {SERVICE_CLI_NAME}",
        *[f"    o {name}" for name in model.operations],
        "    o serve, worker, models, demo (service administration)",
        "",
        _global_section(),
    ]
    return "\n".join(lines) + "\n"


def service_help(model: ServiceModel) -> str:
    lines = [
        SERVICE_CLI_NAME,
        "",
        "DESCRIPTION",
        _wrap(plain(model.metadata.get("serviceFullName", "Amazon Bedrock")), 4),
        "",
        "AVAILABLE COMMANDS",
        *[f"    o {name}" for name in model.operations],
        "",
    ]
    return "\n".join(lines)


def _type_name(arg: cliargs.CliArgument) -> str:
    if arg.shape is None:
        return "integer" if arg.is_int else "string"
    kind = str(arg.shape["type"])
    return {"long": "long", "structure": "structure", "list": "list"}.get(kind, kind)


def operation_help(model: ServiceModel, op: Operation) -> str:
    table = cliargs.arg_table(model, op)
    visible = [a for a in table if not a.hidden]
    synopsis = [f"  {op.cli}"]
    for arg in visible:
        if arg.name == "cli-input-yaml":
            continue
        if arg.name == "cli-input-json":
            synopsis.append("[--cli-input-json | --cli-input-yaml]")
            continue
        text = f"{arg.option} <value>"
        synopsis.append(text if arg.required else f"[{text}]")
    synopsis += [
        f"[{opt}]" if kind == "boolean" else f"[{opt} <value>]" for opt, kind, _ in GLOBAL_OPTIONS
    ]
    lines = [
        op.cli,
        "",
        "DESCRIPTION",
        _wrap(plain(op.documentation), 4),
        "",
    ]
    if op.paginator:
        lines += [
            _wrap(
                f"{op.cli} is a paginated operation. Multiple API calls may be issued in "
                "order to retrieve the entire data set of results. You can disable "
                "pagination by providing the --no-paginate argument.",
                4,
            ),
            "",
        ]
    lines += [
        "SYNOPSIS",
        "\n".join("            " + s if i else s for i, s in enumerate(synopsis)),
        "",
        "OPTIONS",
    ]
    for arg in visible:
        lines.append(f"    {arg.option} ({_type_name(arg)})")
        doc = plain(arg.documentation) if arg.documentation else _extra_doc(arg.name)
        if doc:
            lines.append(_wrap(doc, 8))
        if arg.shape is not None and arg.shape.get("enum"):
            lines.append("")
            lines.append("        Possible values:")
            lines += [f"        o {v}" for v in arg.shape["enum"]]
        lines.append("")
    lines.append(_global_section())
    return "\n".join(lines) + "\n"


def _extra_doc(name: str) -> str:
    return {
        "cli-input-json": "Reads arguments from the JSON string provided (or file://path). "
        "Command-line arguments override the JSON values.",
        "cli-input-yaml": "Reads arguments from the YAML string provided (or file://path). "
        "Command-line arguments override the YAML values.",
        "starting-token": "A token to specify where to start paginating. This is the "
        "NextToken from a previously truncated response.",
        "page-size": "The size of each page to get in the service call. This does not "
        "affect the number of items returned in the command's output.",
        "max-items": "The total number of items to return in the command's output. If more "
        "are available, a NextToken is provided to resume with --starting-token.",
        "generate-cli-skeleton": "Prints a JSON skeleton to standard output without sending "
        "an API request: input (default), yaml-input or output.",
    }.get(name, "")


def _global_section() -> str:
    lines = ["GLOBAL OPTIONS"]
    for opt, kind, doc in GLOBAL_OPTIONS:
        lines.append(f"    {opt} ({kind})")
        lines.append(_wrap(doc, 8))
        lines.append("")
    return "\n".join(lines)
