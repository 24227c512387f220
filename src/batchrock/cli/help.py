"""``help`` pages rendered as plain text from the model's documentation.

``batchrock help``, ``batchrock bedrock help`` and ``batchrock [bedrock] <operation> help``
print the same sections as the AWS CLI reference page (description, synopsis, options with
their types and allowed values, global options). ``batchrock``, ``batchrock --help`` and
``-h`` print :func:`usage`, a one-screen summary of every command (where AWS CLI answers a
usage error: a first-time user asking what the program does gets an answer, exit 0).
"""

from __future__ import annotations

import html
import re
import textwrap

from batchrock.cli import cliargs
from batchrock.cli.config import DEFAULT_ENDPOINT
from batchrock.cli.errors import PROG
from batchrock.cli.model import SERVICE_CLI_NAME, Operation, ServiceModel, Shape

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


def usage(model: ServiceModel, admin_commands: dict[str, str]) -> str:
    """What ``batchrock``, ``batchrock --help`` and ``batchrock -h`` print."""
    width = max(len(name) for name in admin_commands) + 4
    lines = [
        f"usage: {PROG} <command> [options]",
        "",
        textwrap.fill(
            f"{PROG} runs Amazon Bedrock batch inference (model invocation jobs) on your own "
            "machine, and is an AWS-CLI-compatible client of its API.",
            79,
        ),
        "",
        "Service commands:",
        *[
            textwrap.fill(
                text, 79, initial_indent=f"  {name:<{width}}", subsequent_indent=" " * (width + 2)
            )
            for name, text in admin_commands.items()
        ],
        "",
        f"Bedrock operations (as `aws {SERVICE_CLI_NAME} <operation>`; `{SERVICE_CLI_NAME}` "
        "is optional):",
        *[f"  {name}" for name in model.operations],
        "",
        "More help:",
        f"  {PROG} serve --help           a service command's options",
        f"  {PROG} <operation> help       an operation's reference page",
        f"  {PROG} help                   the full reference, global options included",
        "",
        textwrap.fill(
            f"Operations talk to {DEFAULT_ENDPOINT} (a local `{PROG} serve`) unless "
            "--endpoint-url or AWS_ENDPOINT_URL says otherwise; like the AWS CLI they need a "
            "region and credentials (any values do locally).",
            79,
        ),
    ]
    return "\n".join(lines) + "\n"


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
        if arg.shape is not None and arg.shape["type"] in ("structure", "list"):
            lines += _syntax_examples(model, arg)
        lines.append("")
    lines.append(_global_section())
    lines.append("OUTPUT")
    if op.output and model.shape(op.output).get("members"):
        _describe_members(model, model.shape(op.output), 1, lines, [])
    else:
        lines.append("    None")
    return "\n".join(lines) + "\n"


def _kind(model: ServiceModel, shape: Shape) -> str:
    kind = str(shape["type"])
    if kind == "structure" and shape.get("union"):
        return "tagged union structure"
    return kind


def _describe_members(
    model: ServiceModel, shape: Shape, depth: int, lines: list[str], stack: list[str]
) -> None:
    """``name -> (type)`` and its documentation, nested as the AWS CLI reference shows it."""
    for name, ref in shape.get("members", {}).items():
        member = model.shape(ref["shape"])
        lines.append(f"{'    ' * depth}{name} -> ({_kind(model, member)})")
        doc = plain(ref.get("documentation") or member.get("documentation") or "")
        if doc:
            lines.append(_wrap(doc, 4 * depth + 4))
        lines.append("")
        _describe_nested(model, ref["shape"], depth + 1, lines, stack)


def _describe_nested(
    model: ServiceModel, shape_name: str, depth: int, lines: list[str], stack: list[str]
) -> None:
    if shape_name in stack:
        return
    shape = model.shape(shape_name)
    kind = shape["type"]
    if kind == "structure":
        if shape.get("union"):
            keys = ", ".join(shape.get("members", {}))
            lines.append(
                _wrap(
                    "This is a Tagged Union structure. Only one of the following top level keys "
                    f"can be set: {keys}.",
                    4 * depth,
                )
            )
            lines.append("")
        _describe_members(model, shape, depth, lines, [*stack, shape_name])
    elif kind == "list":
        member_name = shape["member"]["shape"]
        member = model.shape(member_name)
        lines.append(f"{'    ' * depth}({_kind(model, member)})")
        lines.append("")
        _describe_nested(model, member_name, depth + 1, lines, [*stack, shape_name])


def shorthand_example(model: ServiceModel, shape: Shape, stack: list[str] | None = None) -> str:
    """``key=string,key2=integer`` style example of a structure (AWS CLI's help shows one)."""
    stack = stack or []
    parts = []
    for name, ref in shape.get("members", {}).items():
        member = model.shape(ref["shape"])
        kind = member["type"]
        if kind == "structure" and ref["shape"] not in stack:
            inner = shorthand_example(model, member, [*stack, ref["shape"]])
            parts.append(f"{name}={{{inner}}}")
        elif kind == "list":
            item = model.shape(member["member"]["shape"])
            if item["type"] == "structure":
                inner = shorthand_example(model, item, [*stack, ref["shape"]])
                parts.append(f"{name}=[{{{inner}}},{{{inner}}}]")
            else:
                parts.append(f"{name}={item['type']},{item['type']}")
        else:
            parts.append(f"{name}={kind}")
    return ",".join(parts)


def _syntax_examples(model: ServiceModel, arg: cliargs.CliArgument) -> list[str]:
    import json

    from batchrock.cli import skeleton

    assert arg.shape is not None and arg.member is not None
    out: list[str] = []
    shape = arg.shape
    if shape["type"] == "structure":
        out += [
            "",
            "        Shorthand Syntax:",
            "",
            "            " + shorthand_example(model, shape),
        ]
    elif model.shape(shape["member"]["shape"])["type"] == "structure":
        item = shorthand_example(model, model.shape(shape["member"]["shape"]))
        out += ["", "        Shorthand Syntax:", "", f"            {item} ..."]
    else:
        kind = model.shape(shape["member"]["shape"])["type"]
        out += ["", "        Syntax:", "", f'            "{kind}" "{kind}" ...']
    example = skeleton.input_skeleton_of(model, shape)
    text = json.dumps(example, indent=2, default=str).replace('""', '"string"')
    out += ["", "        JSON Syntax:", ""]
    out += ["            " + line for line in text.splitlines()]
    return out


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
