"""``--generate-cli-skeleton``: input (JSON), yaml-input (YAML with comments) and output.

Values follow AWS CLI v2: strings ``""``, numbers ``0``, booleans ``true``, timestamps
1970-01-01T00:00:00, enums their first value, lists one element, maps ``{"KeyName": …}``.
The output skeleton names each string after its member and is checked against the output
shape, as v2's stubbed client does.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from batchrock.cli.model import ServiceModel, Shape

_SENTENCE_END = re.compile(r"[.:]+")


def _generate(
    model: ServiceModel,
    shape_name: str,
    stack: list[str],
    *,
    name: str = "",
    member_names: bool = False,
    commented: bool = False,
) -> Any:
    shape = model.shape(shape_name)
    stack.append(shape_name)
    try:
        kind = shape["type"]
        if kind == "structure":
            return _structure(model, shape_name, shape, stack, member_names, commented)
        if kind == "list":
            member = shape["member"]["shape"]
            return [
                _generate(
                    model,
                    member,
                    stack,
                    name=member if member_names else "",
                    member_names=member_names,
                    commented=commented,
                )
            ]
        if kind == "map":
            value = _generate(
                model,
                shape["value"]["shape"],
                stack,
                member_names=member_names,
                commented=commented,
            )
            if commented:
                from ruamel.yaml.comments import CommentedMap

                return CommentedMap([("KeyName", value)])
            return {"KeyName": value}
        if kind == "string":
            if member_names:
                return name
            if shape.get("enum"):
                return shape["enum"][0]
            return ""
        if kind in ("integer", "long"):
            return 0
        if kind in ("float", "double"):
            return 0.0
        if kind == "boolean":
            return True
        if kind == "timestamp":
            return datetime.datetime(1970, 1, 1, 0, 0, 0)
        return ""
    finally:
        stack.pop()


def _structure(
    model: ServiceModel,
    shape_name: str,
    shape: Shape,
    stack: list[str],
    member_names: bool,
    commented: bool,
) -> Any:
    out: Any
    if commented:
        from ruamel.yaml.comments import CommentedMap

        out = CommentedMap()
    else:
        out = {}
    if stack.count(shape_name) > 1:
        return out
    required = set(shape.get("required", []))
    for member, ref in shape.get("members", {}).items():
        out[member] = _generate(
            model, ref["shape"], stack, name=member, member_names=member_names, commented=commented
        )
        if commented:
            comment = _comment(model, ref, member in required)
            if comment:
                out.yaml_add_eol_comment("# " + comment, member)
    return out


def first_sentence(doc: str) -> str:
    """AWS CLI's overview of a doc string: its text up to the first ``.`` or ``:``, plus ``.``."""
    import xml.dom.minidom
    import xml.parsers.expat

    try:
        dom = xml.dom.minidom.parseString(f"<doc>{doc}</doc>")
    except xml.parsers.expat.ExpatError:
        text = doc
    else:
        parts: list[str] = []

        def collect(node: Any) -> None:
            for child in node.childNodes:
                if child.nodeType == child.TEXT_NODE:
                    parts.append(child.data)
                else:
                    collect(child)

        collect(dom)
        text = "".join(parts)
    text = _SENTENCE_END.split(text, maxsplit=1)[0]
    if text:
        text += "."
    return text.replace("\n", " ").replace("\u2028", " ")


def _comment(model: ServiceModel, ref: dict[str, Any], required: bool) -> str:
    shape = model.shape(ref["shape"])
    parts = []
    if required:
        parts.append("[REQUIRED]")
    doc = first_sentence(ref.get("documentation") or shape.get("documentation") or "")
    if doc:
        parts.append(doc)
    if shape.get("enum"):
        parts.append("Valid values are: " + ", ".join(shape["enum"]) + ".")
    return " ".join(parts)


def input_skeleton(model: ServiceModel, input_shape: str | None) -> dict[str, Any]:
    if not input_shape:
        return {}
    result = _generate(model, input_shape, [])
    assert isinstance(result, dict)
    return result


def yaml_input_skeleton(model: ServiceModel, input_shape: str | None) -> Any:
    if not input_shape:
        return {}
    return _generate(model, input_shape, [], commented=True)


def output_skeleton(model: ServiceModel, output_shape: str | None) -> dict[str, Any]:
    if not output_shape:
        return {}
    result = _generate(model, output_shape, [], member_names=True)
    assert isinstance(result, dict)
    return result


def input_skeleton_of(model: ServiceModel, shape: Shape) -> Any:
    """The input skeleton of one (nested) shape, for help pages."""
    name = next((n for n, sh in model.shapes.items() if sh is shape), None)
    if name is None:
        return {}
    return _generate(model, name, [])
