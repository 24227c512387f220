"""The botocore ``bedrock`` service model: the source of routes, shapes and constraints."""

from __future__ import annotations

import functools
from typing import Any

from botocore.loaders import Loader
from botocore.model import OperationModel, ServiceModel

#: The operations batchrock serves (the model-invocation-job family and tagging).
OPERATIONS = (
    "CreateModelInvocationJob",
    "GetModelInvocationJob",
    "ListModelInvocationJobs",
    "StopModelInvocationJob",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
)


@functools.cache
def service_model() -> ServiceModel:
    loader = Loader()
    return ServiceModel(loader.load_service_model("bedrock", "service-2"), "bedrock")


def operation(name: str) -> OperationModel:
    op: OperationModel = service_model().operation_model(name)
    return op


def routes() -> list[tuple[str, list[str], str]]:
    """``(method, path segments, operation)`` for every served operation, from the model.

    A segment ``{name}`` is a URI label."""
    table: list[tuple[str, list[str], str]] = []
    for name in OPERATIONS:
        http: dict[str, Any] = operation(name).http
        path = http["requestUri"].split("?", 1)[0]
        table.append((http["method"], path.strip("/").split("/"), name))
    return table
