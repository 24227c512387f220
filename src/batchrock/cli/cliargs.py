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
from batchrock.cli.errors import ParamValidationError
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
                    nargs="+" if kind == "list" else None,
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
    """A parsed command-line value -> the Python value for the request parameters."""
    assert arg.shape is not None
    if isinstance(raw, list):
        raw = [load_paramfile(v, arg.option) for v in raw]
    elif isinstance(raw, str):
        raw = load_paramfile(raw, arg.option)
    return _unpack(model, arg.shape, raw, arg.option)


def _unpack(model: ServiceModel, shape: Shape, raw: Any, option: str) -> Any:
    kind = shape["type"]
    if kind in SCALARS:
        return _scalar(shape, raw, option)
    if kind == "list":
        items = raw if isinstance(raw, list) else [raw]
        if len(items) == 1 and isinstance(items[0], str) and items[0].lstrip().startswith("["):
            return _json(items[0], option)
        member = model.shape(shape["member"]["shape"])
        if member["type"] in SCALARS:
            return [_scalar(member, v, option) for v in items]
        return [_complex(model, member, v, option) for v in items]
    return _complex(model, shape, raw, option)


def _complex(model: ServiceModel, shape: Shape, raw: Any, option: str) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if raw.lstrip().startswith(("{", "[")):
        return _json(raw, option)
    try:
        parsed = shorthand.parse(raw)
    except shorthand.ShorthandError as exc:
        raise ParamValidationError(f"Error parsing parameter '{option}': {exc}") from exc
    return shape_value(model, shape, parsed)


def _json(raw: str, option: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ParamValidationError(
            f"Error parsing parameter '{option}': Invalid JSON: {exc}\nJSON received: {raw}"
        ) from exc


def _scalar(shape: Shape, raw: Any, option: str) -> Any:
    kind = shape["type"]
    if kind == "blob":
        return raw
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("float", "double"):
            return float(raw)
    except ValueError as exc:
        raise ParamValidationError(f"Error parsing parameter '{option}': {exc}") from exc
    if kind == "boolean":
        return raw.lower() == "true" if isinstance(raw, str) else bool(raw)
    return raw


def shape_value(model: ServiceModel, shape: Shape, value: Any) -> Any:
    """Shorthand gives strings and lists; make them match the model (ints, one-item lists)."""
    kind = shape["type"]
    if kind == "structure" and isinstance(value, dict):
        members = shape.get("members", {})
        return {
            k: shape_value(model, model.member_shape(shape, k), v) if k in members else v
            for k, v in value.items()
        }
    if kind == "map" and isinstance(value, dict):
        vshape = model.shape(shape["value"]["shape"])
        return {k: shape_value(model, vshape, v) for k, v in value.items()}
    if kind == "list":
        member = model.shape(shape["member"]["shape"])
        items = value if isinstance(value, list) else [value]
        return [shape_value(model, member, v) for v in items]
    if kind in ("integer", "long") and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    if kind in ("float", "double") and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if kind == "boolean" and isinstance(value, str):
        return value.lower() == "true"
    return value
