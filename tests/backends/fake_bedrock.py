"""A local stand-in for the bedrock-runtime wire (InvokeModel and Converse), run as a process.

    python tests/backends/fake_bedrock.py --port 8001 [--log requests.jsonl]

AWS itself cannot be reached from the tests, so this server answers botocore's requests the
way the service does: ``POST /model/{modelId}/invoke`` returns the model's response body with
the ``X-Amzn-Bedrock-*-Token-Count`` headers, ``POST /model/{modelId}/converse`` returns the
Converse response, and errors carry ``x-amzn-ErrorType`` and ``{"message": ...}``. Answers come
from batchrock's built-in model; a body that does not fit its family is a
ValidationException, as on Bedrock. Markers in the text inject faults (counted per marker):

    FAULT:throttle:N   ThrottlingException (429) the first N times
    FAULT:unavailable:N  ServiceUnavailableException (503) the first N times
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections import Counter
from urllib.parse import unquote

from fake_http import serve

from batchrock.backends.base import ModelRequest
from batchrock.backends.builtin import BuiltinModel

FAULT = re.compile(r"FAULT:(\w+):(\d+)")
ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>invoke|converse)$")


class FakeBedrock:
    def __init__(self, log_path: str | None) -> None:
        self.model = BuiltinModel()
        self.seen: Counter[str] = Counter()
        self.log = open(log_path, "a", buffering=1) if log_path else None

    async def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, list[str]]:
        match = ROUTE.match(path)
        if not match:
            return _error(404, "UnknownOperationException", f"no route for {path}")
        model_id = unquote(match.group("model"))
        converse = match.group("op") == "converse"
        request = json.loads(body)
        if self.log:
            entry = {"model": model_id, "op": match.group("op"), "body": request}
            self.log.write(json.dumps(entry) + "\n")
        fault = FAULT.search(json.dumps(request))
        if fault:
            self.seen[fault.group(0)] += 1
            if self.seen[fault.group(0)] <= int(fault.group(2)):
                if fault.group(1) == "throttle":
                    return _error(429, "ThrottlingException", "Too many requests, please wait.")
                return _error(503, "ServiceUnavailableException", "Service unavailable.")
        if converse:
            request.pop("modelId", None)
        kind = "Converse" if converse else "InvokeModel"
        result = await self.model.invoke(ModelRequest(model_id, kind, request, "r"))  # type: ignore[arg-type]
        if result.error is not None:
            return _error(400, "ValidationException", result.error.message)
        extra = []
        if not converse:
            extra = [
                f"X-Amzn-Bedrock-Input-Token-Count: {result.input_tokens}",
                f"X-Amzn-Bedrock-Output-Token-Count: {result.output_tokens}",
            ]
        return 200, json.dumps(result.output).encode(), extra


def _error(status: int, code: str, message: str) -> tuple[int, bytes, list[str]]:
    return status, json.dumps({"message": message}).encode(), [f"x-amzn-ErrorType: {code}"]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log")
    args = parser.parse_args()
    await serve(FakeBedrock(args.log).answer, args.port)


if __name__ == "__main__":
    asyncio.run(main())
