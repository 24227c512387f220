"""An operation's command-line options, built from the model, and how their values are read.

Each input member becomes ``--kebab-name``. Lists take several values (``--tag-keys a b``);
structures and lists of structures take JSON or shorthand; any value may be ``file://`` or
``fileb://``. Paginated operations also get ``--starting-token``, ``--page-size`` and
``--max-items``.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from batchrock.cli import shorthand
from batchrock.cli.argparser import SKELETON_CHOICES, CliArgParser
from batchrock.cli.errors import CliError, ParamValidationError
from batchrock.cli.model import Operation, ServiceModel, Shape, cli_name

SCALARS = ("string", "integer", "long", "boolean", "float", "double", "timestamp", "blob")


class CliArgument(NamedTuple):
    name: str
    dest: str
    member: str | None = None
    shape: Shape | None = None
    nargs: str | None = None
    required: bool = False
    hidden: bool = False
    is_int: bool = False
    choices: tuple[str, ...] | None = None
    flag: bool = False
    documentation: str = ""

    @property
    def option(self) -> str:
        return "--" + self.name


def arg_table(model: ServiceModel, op: Operation) -> list[CliArgument]:
    table: list[CliArgument] = []
    paged = op.paginator
    if op.input:
        inp = model.shape(op.input)
        required = set(inp.get("required", []))
        for member, ref in inp.get("members", {}).items():
            shape = model.shape(ref["shape"])
            kind = shape["type"]
            hidden = paged is not None and member in (
                paged["input_token"],
                paged.get("limit_key"),
            )
            table.append(
                CliArgument(
                    name=cli_name(member),
                    dest=member,
                    member=member,
                    shape=shape,
                    nargs="*" if kind == "list" else None,
                    required=member in required,
                    hidden=hidden,
                    flag=kind == "boolean",
                    documentation=ref.get("documentation") or shape.get("documentation", ""),
                )
            )
    table.append(CliArgument("cli-input-json", "cli_input_json"))
    table.append(CliArgument("cli-input-yaml", "cli_input_yaml"))
    if paged:
        table.append(CliArgument("starting-token", "starting_token"))
        table.append(CliArgument("page-size", "page_size", is_int=True))
        table.append(CliArgument("max-items", "max_items", is_int=True))
    table.append(
        CliArgument(
            "generate-cli-skeleton", "generate_cli_skeleton", nargs="?", choices=SKELETON_CHOICES
        )
    )
    return table


def operation_parser(table: list[CliArgument]) -> CliArgParser:
    p = CliArgParser()
    p.add_argument("help", nargs="?")
    for arg in table:
        if arg.flag:
            p.add_argument(arg.option, dest=arg.dest, action="store_true", default=None)
            p.add_argument("--no-" + arg.name, dest=arg.dest, action="store_false")
        elif arg.name == "generate-cli-skeleton":
            p.add_argument(arg.option, dest=arg.dest, nargs="?", const="input", choices=arg.choices)
        else:
            p.add_argument(
                arg.option, dest=arg.dest, nargs=arg.nargs, type=int if arg.is_int else str
            )
    return p


def load_paramfile(value: str, option: str) -> str | bytes:
    """``file://path`` -> its text, ``fileb://path`` -> its bytes; anything else unchanged."""
    for prefix, mode in (("file://", "r"), ("fileb://", "rb")):
        if value.startswith(prefix):
            path = os.path.expandvars(os.path.expanduser(value[len(prefix) :]))
            try:
                if mode == "rb":
                    with open(path, "rb") as fb:
                        return fb.read()
                with open(path, encoding="utf-8") as f:
                    return f.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise ParamValidationError(
                    f"Error parsing parameter '{option}': Unable to load paramfile {value}: {exc}"
                ) from exc
    return value


def unpack(model: ServiceModel, arg: CliArgument, raw: Any) -> Any:
    """A parsed command-line value -> the Python value for the request parameters.

    As AWS CLI: values that look like JSON (``{``/``[``) are JSON; other values of structures,
    maps and lists of structures are shorthand; scalars are converted by type.
    """
    assert arg.shape is not None
    option = arg.option
    if isinstance(raw, list):
        raw = [_text(load_paramfile(v, option)) for v in raw]
    elif isinstance(raw, str):
        raw = load_paramfile(raw, option)
    shape = arg.shape
    first = raw[0] if isinstance(raw, list) and raw else raw
    looks_like_json = isinstance(first, str) and first.strip().startswith(("[", "{"))
    if _supports_shorthand(model, shape) and not looks_like_json:

        def load(value: str) -> Any:
            return load_paramfile(value, option)

        try:
            if isinstance(raw, list):
                parsed: Any = [shorthand.parse(v, load) for v in raw]
            else:
                parsed = shorthand.parse(_text(raw), load)
        except shorthand.ShorthandError as exc:
            raise ParamValidationError(f"Error parsing parameter '{option}': {exc}") from exc
        return _back_compat(model, shape, parsed)
    return _unpack(model, shape, raw, option)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _supports_shorthand(model: ServiceModel, shape: Shape) -> bool:
    kind = shape["type"]
    if kind == "list":
        return bool(model.shape(shape["member"]["shape"])["type"] in ("structure", "list", "map"))
    return bool(kind in ("structure", "map"))


def _unpack(model: ServiceModel, shape: Shape, raw: Any, option: str) -> Any:
    kind = shape["type"]
    if kind in SCALARS:
        return _scalar(shape, raw)
    if kind in ("structure", "map"):
        text = _text(raw)
        if text.lstrip()[:1] == "{":
            return _json(text, option)
        raise ParamValidationError(f"Error parsing parameter '{option}': Invalid JSON:\n{text}")
    # a list
    if isinstance(raw, str | bytes):
        text = _text(raw)
        if text.lstrip()[:1] == "[":
            return _json(text, option)
        raw = [text]
    elif len(raw) == 1 and raw[0].strip()[:1] == "[":
        return _json(raw[0], option)
    member = model.shape(shape["member"]["shape"])
    try:
        return [_unpack(model, member, v, option) for v in raw]
    except (ValueError, TypeError) as exc:
        raise ParamValidationError(f"Error parsing parameter '{option}': {raw[0]}") from exc


def _json(raw: str, option: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ParamValidationError(
            f"Error parsing parameter '{option}': Invalid JSON: {exc}\nJSON received: {raw}"
        ) from exc


def _scalar(shape: Shape, raw: Any) -> Any:
    kind = shape["type"]
    if kind == "blob":
        return raw
    raw = _text(raw)
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("float", "double"):
            return float(raw)
    except ValueError as exc:
        # AWS CLI lets this escape as a plain error (rc 255) with Python's message.
        raise CliError(str(exc)) from exc
    if kind == "boolean":
        return False if raw.lower() == "false" else bool(raw)
    return raw


def _back_compat(model: ServiceModel, shape: Shape, value: Any) -> Any:
    """Shorthand gives strings and lists: give modelled members their types (numbers,
    booleans) and wrap single values given for lists, as AWS CLI does."""
    kind = shape["type"]
    if value is None:
        return value
    if kind == "structure":
        if isinstance(value, dict):
            for member in shape.get("members", {}):
                if value.get(member) is not None:
                    value[member] = _back_compat(
                        model, model.member_shape(shape, member), value[member]
                    )
        return value
    if kind == "list":
        if not isinstance(value, list):
            return [value]
        member = model.shape(shape["member"]["shape"])
        return [_back_compat(model, member, v) for v in value]
    if kind == "map":
        if isinstance(value, dict):
            vshape = model.shape(shape["value"]["shape"])
            for k in value:
                value[k] = _back_compat(model, vshape, value[k])
        return value
    try:
        if kind in ("integer", "long"):
            return int(value)
        if kind in ("float", "double"):
            return float(value)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from exc
    if kind == "boolean" and isinstance(value, str):
        if value.lower() == "true":
            return True
        if value.lower() == "false":
            return False
    return value
