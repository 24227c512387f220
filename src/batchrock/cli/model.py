"""The Bedrock service model, read straight from botocore's data files.

botocore ships ``bedrock/<version>/service-2.json(.gz)``: member order, enums, constraints,
HTTP routes and documentation all come from there, so the CLI and boto3 agree by
construction. The file is located without importing botocore (that import alone costs more
than the whole list call is allowed to take).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from functools import cache
from typing import Any, NamedTuple

SERVICE = "bedrock"
SERVICE_CLI_NAME = "bedrock"

#: The operations batchrock serves, in the order ``help`` lists them.
OPERATIONS: tuple[str, ...] = (
    "CreateModelInvocationJob",
    "GetModelInvocationJob",
    "ListModelInvocationJobs",
    "ListTagsForResource",
    "StopModelInvocationJob",
    "TagResource",
    "UntagResource",
)

Shape = dict[str, Any]


def cli_name(name: str) -> str:
    """``ListModelInvocationJobs`` -> ``list-model-invocation-jobs`` (AWS CLI's xform_name)."""
    out: list[str] = []
    for i, ch in enumerate(name):
        if (
            ch.isupper()
            and i
            and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower()))
        ):
            out.append("-")
        out.append(ch.lower())
    return "".join(out)


def _data_dir() -> str:
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("botocore is not installed; the CLI needs its service model")
    return os.path.join(next(iter(spec.submodule_search_locations)), "data", SERVICE)


def _read_json(folder: str, stem: str) -> Any:
    plain = os.path.join(folder, stem + ".json")
    if os.path.exists(plain):
        with open(plain, "rb") as f:
            return json.loads(f.read())
    with gzip.open(plain + ".gz", "rb") as g:
        return json.loads(g.read())


class Operation(NamedTuple):
    name: str
    cli: str
    method: str
    uri: str
    input: str | None
    output: str | None
    documentation: str
    paginator: dict[str, str] | None


class ServiceModel:
    """The parts of ``service-2.json`` the CLI uses."""

    def __init__(self, raw: dict[str, Any], paginators: dict[str, Any]) -> None:
        self.metadata: dict[str, Any] = raw["metadata"]
        self.shapes: dict[str, Shape] = raw["shapes"]
        self._ops: dict[str, Any] = raw["operations"]
        self._pages: dict[str, Any] = paginators.get("pagination", {})
        self.operations: dict[str, Operation] = {}
        for name in OPERATIONS:
            op = self._ops[name]
            self.operations[cli_name(name)] = Operation(
                name=name,
                cli=cli_name(name),
                method=op["http"]["method"],
                uri=op["http"]["requestUri"],
                input=(op.get("input") or {}).get("shape"),
                output=(op.get("output") or {}).get("shape"),
                documentation=op.get("documentation", ""),
                paginator=self._pages.get(name),
            )

    def shape(self, name: str) -> Shape:
        return self.shapes[name]

    def member_shape(self, parent: Shape, member: str) -> Shape:
        return self.shapes[parent["members"][member]["shape"]]


@cache
def load() -> ServiceModel:
    folder = _data_dir()
    versions = sorted(v for v in os.listdir(folder) if v[:1].isdigit())
    latest = os.path.join(folder, versions[-1])
    paginators: dict[str, Any] = {}
    if os.path.exists(os.path.join(latest, "paginators-1.json")):
        paginators = _read_json(latest, "paginators-1")
    return ServiceModel(_read_json(latest, "service-2"), paginators)
