"""CLI start-up: one ``list-model-invocation-jobs`` call, start to exit, batchrock vs AWS CLI v1.

Both command lines run against the same live ``batchrock serve`` (API only, 20 jobs), with the
same isolated AWS configuration (keys in the environment, region, endpoint flag), alternating
so that machine noise hits both alike. Reports the median wall time of each and the ratio
(target: batchrock <= 0.33 x AWS CLI v1).

    .venv/bin/python benchmarks/cli_startup.py --runs 21 --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECTION = "## CLI start-up"
COMMAND = ".venv/bin/python benchmarks/cli_startup.py --runs {runs} --write-docs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(BIN / "batchrock"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--no-engine",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/model-invocation-jobs", timeout=1):
                break
        except urllib.error.HTTPError:
            break  # answering (even with an error) means it is up
        except OSError:
            time.sleep(0.1)
    return proc, url


def seed(url: str, env: dict[str, str], count: int) -> None:
    for i in range(count):
        subprocess.run(
            [
                str(BIN / "batchrock"),
                "--endpoint-url",
                url,
                "create-model-invocation-job",
                "--job-name",
                f"bench-{i:03d}",
                "--role-arn",
                "arn:aws:iam::123456789012:role/R",
                "--model-id",
                "amazon.nova-lite-v1:0",
                "--input-data-config",
                "s3InputDataConfig={s3Uri=s3://bench-bucket/in.jsonl}",
                "--output-data-config",
                "s3OutputDataConfig={s3Uri=s3://bench-bucket/out/}",
            ],
            env=env,
            check=True,
            capture_output=True,
        )


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, check=True)
    return time.perf_counter() - start, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clibench"))
    home = work / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "HOME": str(home),
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_ACCESS_KEY_ID": "AKIDBENCH",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
        }
    )
    proc, url = start_server(work / "data")
    try:
        seed(url, env, args.jobs)
        ours = [str(BIN / "batchrock"), "--endpoint-url", url, "list-model-invocation-jobs"]
        theirs = [str(BIN / "aws"), "--endpoint-url", url, "bedrock", "list-model-invocation-jobs"]
        for argv in (ours, theirs):  # warm the page cache and check both work
            _, out = timed(argv, env)
            assert len(json.loads(out)["invocationJobSummaries"]) == args.jobs
        times: dict[str, list[float]] = {"batchrock": [], "aws": []}
        for _ in range(args.runs):
            times["batchrock"].append(timed(ours, env)[0])
            times["aws"].append(timed(theirs, env)[0])
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["batchrock"] / med["aws"]
    aws_version = subprocess.run(
        [str(BIN / "aws"), "--version"], capture_output=True, text=True
    ).stdout.split()[0]
    report = (
        f"{SECTION}\n\n"
        "One `list-model-invocation-jobs` call (20 jobs, JSON output), process start to exit, "
        "against the same live `batchrock serve`, the two command lines alternating, "
        f"{args.runs} runs each. Target: batchrock at most 0.33 of AWS CLI v1's time, "
        "keeping every credential and configuration source (static keys take a fast path; "
        "other sources go through botocore's provider chain).\n\n"
        f"    {COMMAND.format(runs=args.runs)}\n\n"
        f"Run on {time.strftime('%Y-%m-%d')}:\n\n"
        "| command | median s | min s | max s |\n| --- | ---: | ---: | ---: |\n"
        f"| `batchrock list-model-invocation-jobs` | {med['batchrock']:.3f} | "
        f"{min(times['batchrock']):.3f} | {max(times['batchrock']):.3f} |\n"
        f"| `aws bedrock list-model-invocation-jobs` ({aws_version}) | {med['aws']:.3f} | "
        f"{min(times['aws']):.3f} | {max(times['aws']):.3f} |\n\n"
        f"Ratio (median batchrock / median aws): **{ratio:.2f}**.\n"
    )
    print(report)
    if args.write_docs:
        write_section(REPO / "docs" / "benchmarks.md", report)
    return 0 if ratio <= 0.33 else 1


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this benchmark's section, leaving the others as they are."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
