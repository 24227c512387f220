"""``batchrock demo`` (``make demo``): a local service, sample jobs and their live progress.

It starts ``batchrock serve`` with the embedded defaults (local object store, built-in model)
on a free port, writes sample inputs of a few hundred records, submits four jobs through the
Bedrock API with botocore (boto3's core), stops one of them mid-run, shows progress until
every job is final, then prints the job listing, a manifest and a result, and the commands
that show the jobs again (the data dir is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from batchrock.settings import Settings, default_data_dir

FINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}
BUCKET = "demo-bucket"

#: The port of a plain ``batchrock serve``, the client's default endpoint.
DEFAULT_PORT = 8765
#: Region and keys for the client in the closing hint: like the AWS CLI it needs some, and any
#: values do for a local server (these map to the demo's account, 123456789012).
HINT_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
}
#: Each job's name and status, one job a line.
HINT_QUERY = "--query 'invocationJobSummaries[].[jobName,status]' --output text"

#: Settings the demo's server gets unless the environment already sets them: a little
#: latency per record, so progress can be watched.
DEMO_ENV = {
    "BATCHROCK_BUILTIN_LATENCY_MS": "40",
    "BATCHROCK_ENGINE_RECORD_CONCURRENCY": "4",
    "BATCHROCK_ENGINE_POLL_SECONDS": "0.1",
    "BATCHROCK_ENGINE_CHECKPOINT_SECONDS": "0.2",
}


@dataclass(frozen=True)
class DemoJob:
    name: str
    model_id: str
    prefix: str
    note: str
    invocation_type: str = "InvokeModel"


def claude(i: int) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"Write a haiku about the number {i}."}],
    }


def titan_embed(i: int) -> dict[str, Any]:
    return {"inputText": f"Product description number {i}", "dimensions": 256}


def converse(i: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": [{"text": f"Summarise ticket #{i}."}]}],
        "inferenceConfig": {"maxTokens": 80},
    }


def llama(i: int) -> dict[str, Any]:
    return {"prompt": f"Question {i}: what is batch inference?", "max_gen_len": 64}


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def write_inputs(data_dir: Path, n: int) -> list[DemoJob]:
    """Sample inputs in the embedded object store (``DATA_DIR/s3/demo-bucket/...``)."""
    root = data_dir / "s3" / BUCKET
    files: dict[str, bytes] = {}
    half = n // 2
    recs = [{"recordId": f"CALL{i:07d}", "modelInput": claude(i)} for i in range(n)]
    files["input/claude/part-1.jsonl"] = _jsonl(recs[:half])
    files["input/claude/part-2.jsonl"] = _jsonl(recs[half:])
    # No recordId: the service generates one per record, as Bedrock does.
    files["input/embeddings/texts.jsonl"] = _jsonl(
        [{"modelInput": titan_embed(i)} for i in range(max(100, n * 2 // 3))]
    )
    files["input/nova/tickets.jsonl"] = _jsonl(
        [{"recordId": f"TICKET{i:05d}", "modelInput": converse(i)} for i in range(n + n // 3)]
    )
    bad = [_jsonl([{"recordId": f"Q{i:04d}", "modelInput": llama(i)}]) for i in range(n // 2)]
    bad[41] = b'{"recordId": "Q0041", "modelInput": {"prompt": "unterminated\n'
    files["input/bad/questions.jsonl"] = b"".join(bad)
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "output").mkdir(parents=True, exist_ok=True)
    return [
        DemoJob("demo-claude", "anthropic.claude-3-haiku-20240307-v1:0", "input/claude/",
                f"{n} Claude Messages records in two files"),
        DemoJob("demo-embeddings", "amazon.titan-embed-text-v2:0", "input/embeddings/",
                "Titan embeddings, 256 dimensions, no recordIds"),
        DemoJob("demo-nova-stopped", "amazon.nova-lite-v1:0", "input/nova/",
                "Nova, Converse request bodies, stopped mid-run", "Converse"),
        DemoJob("demo-bad-input", "meta.llama3-1-8b-instruct-v1:0", "input/bad/",
                "Llama, line 42 is not JSON: fails in Validating"),
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(data_dir: Path, port: int, log: TextIO) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    for key, value in DEMO_ENV.items():
        env.setdefault(key, value)
    env["BATCHROCK_OBJECT_STORE"] = "local"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "batchrock.admin", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError("the server exited at start-up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_batchrock/health", timeout=1):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in 30 seconds") from None
            time.sleep(0.1)


def client(url: str) -> Any:
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "bedrock",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIADEMO",
        aws_secret_access_key="demo",
        config=Config(retries={"max_attempts": 2}),
    )


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else 0
    return "#" * filled + "." * (width - filled)


def _row(job: dict[str, Any]) -> str:
    total = int(job.get("totalRecordCount", 0))
    done = int(job.get("processedRecordCount", 0))
    errors = int(job.get("errorRecordCount", 0))
    return (
        f"  {job['jobName']:<20} {job['status']:<18} [{_bar(done, total)}] "
        f"{done:>4}/{total:<4} errors {errors:<3}"
    )


def watch(bedrock: Any, arns: dict[str, str], stop_name: str, out: TextIO) -> dict[str, Any]:
    """Poll until every job is final, redrawing the progress table; stop ``stop_name`` once it
    has done some work."""
    tty = out.isatty()
    drawn = 0
    last_text = ""
    stopped = False
    jobs: dict[str, Any] = {}
    while True:
        for name, arn in arns.items():
            jobs[name] = bedrock.get_model_invocation_job(jobIdentifier=arn)
        target = jobs[stop_name]
        if not stopped and int(target.get("processedRecordCount", 0)) > 0:
            with contextlib.suppress(Exception):  # it may have finished already
                bedrock.stop_model_invocation_job(jobIdentifier=arns[stop_name])
            stopped = True
        lines = [_row(job) for job in jobs.values()]
        text = "\n".join(lines)
        if tty:
            if drawn:
                out.write(f"\x1b[{drawn}F")
            out.write("\n".join(line + "\x1b[K" for line in lines) + "\n")
            drawn = len(lines)
        elif text != last_text:
            out.write(text + "\n\n")
        out.flush()
        last_text = text
        if all(job["status"] in FINAL for job in jobs.values()):
            return jobs
        time.sleep(0.2)


def run(data_dir: Path, n: int, out: TextIO, hint_port: int = DEFAULT_PORT) -> int:
    jobs = write_inputs(data_dir, n)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "demo-server.log"
    with log_path.open("w") as log:
        out.write(f"Starting batchrock serve on {url} (data dir {data_dir})\n")
        proc = start_server(data_dir, port, log)
        try:
            bedrock = client(url)
            arns: dict[str, str] = {}
            for job in jobs:
                arns[job.name] = bedrock.create_model_invocation_job(
                    jobName=job.name,
                    roleArn="arn:aws:iam::123456789012:role/BatchInferenceDemo",
                    modelId=job.model_id,
                    modelInvocationType=job.invocation_type,
                    inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/{job.prefix}"}},
                    outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/output/"}},
                )["jobArn"]
                out.write(f"  submitted {job.name:<20} {job.note}\n")
            out.write("\nProgress (the stopped job is stopped once it has started):\n")
            final = watch(bedrock, arns, "demo-nova-stopped", out)
            report(bedrock, final, data_dir, out)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    out.write(try_it_yourself(data_dir, hint_port))
    return 0


def report(bedrock: Any, jobs: dict[str, Any], data_dir: Path, out: TextIO) -> None:
    """The final listing, one job's manifest and first result, and how to look again."""
    listing = bedrock.list_model_invocation_jobs(sortOrder="Ascending")
    # Not the AWS CLI's output (that is JSON): the listing's summaries, a few fields each.
    out.write("\nThe jobs as ListModelInvocationJobs returns them, oldest first:\n")
    out.write(f"  {'jobName':<20} {'status':<18} {'records':>8} {'ok':>5} {'errors':>6}\n")
    for s in listing["invocationJobSummaries"]:
        out.write(
            f"  {s['jobName']:<20} {s['status']:<18} {s.get('totalRecordCount', 0):>8} "
            f"{s.get('successRecordCount', 0):>5} {s.get('errorRecordCount', 0):>6}\n"
        )
        if s.get("message"):
            out.write(textwrap.fill(f"message: {s['message']}", 96, initial_indent=" " * 6,
                                    subsequent_indent=" " * 15) + "\n")  # fmt: skip
    done = jobs["demo-claude"]
    job_id = done["jobArn"].rsplit("/", 1)[-1]
    folder = data_dir / "s3" / BUCKET / "output" / job_id
    manifest = orjson.loads((folder / "manifest.json.out").read_bytes())
    out.write(f"\ns3://{BUCKET}/output/{job_id}/manifest.json.out:\n")
    out.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2).decode() + "\n")
    first = orjson.loads((folder / "part-1.jsonl.out").read_bytes().split(b"\n", 1)[0])
    out.write(f"\nThe first line of s3://{BUCKET}/output/{job_id}/part-1.jsonl.out, indented:\n")
    out.write(orjson.dumps(first, option=orjson.OPT_INDENT_2).decode() + "\n")
    out.write(f"\nOutputs are files under {data_dir / 's3' / BUCKET / 'output'}.\n")


def batchrock_command() -> str:
    """How to run this same ``batchrock`` from any folder: its name when the shell finds this
    very program on PATH, else the full path of the console script next to this Python (a
    virtualenv's ``bin``), else ``python -m batchrock.cli``."""
    script = Path(sys.executable).parent / "batchrock"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m batchrock.cli"
    found = shutil.which("batchrock")
    if found is not None and Path(found).resolve() == script.resolve():
        return "batchrock"
    return shlex.quote(str(script.absolute()))


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def try_it_yourself(data_dir: Path, port: int) -> str:
    """Commands that show the demo's jobs again, each working as printed: the data dir is kept,
    the server gets a free port (the usual one when it is free), the client a region and keys
    (any values do locally) and the endpoint when it is not the default."""
    if not _port_is_free(port):
        port = _free_port()
    cmd = batchrock_command()
    serve = f"{cmd} serve --data-dir {shlex.quote(str(data_dir))}"
    endpoint = ""
    if port != DEFAULT_PORT:
        serve += f" --port {port}"
        endpoint = f" --endpoint-url http://127.0.0.1:{port}"
    lines = [
        "",
        f"The demo's jobs and files stay in {data_dir}. To look at them again, serve that",
        "folder (in another terminal; Ctrl-C stops it):",
        f"  {serve}",
        "and list them with batchrock's AWS-CLI-compatible client:",
        f"  export {' '.join(f'{k}={v}' for k, v in HINT_ENV.items())}",
        f"  {cmd}{endpoint} list-model-invocation-jobs {HINT_QUERY}",
    ]
    if shutil.which("aws"):
        lines += [
            "or with the AWS CLI (same variables):",
            f"  aws --endpoint-url http://127.0.0.1:{port} bedrock list-model-invocation-jobs "
            f"{HINT_QUERY}",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="batchrock demo", description=__doc__)
    parser.add_argument("--records", type=int, default=300, help="records in the main job")
    args = parser.parse_args(argv)
    n = max(100, args.records)
    # The user's own data dir is used only when they chose one; otherwise a fresh temp dir.
    if settings.data_dir != default_data_dir():
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="batchrock-demo-"))
    try:
        return run(data_dir, n, sys.stdout, settings.port)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log = data_dir / "demo-server.log"
        print(f"batchrock demo: {exc} (server log: {log})", file=sys.stderr)
        return 1
