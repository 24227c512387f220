"""Network namespaces for the multi-host test: a "services" namespace that runs only
PostgreSQL and the S3 server, and one namespace per worker that is wired to the services
namespace and nothing else.

    test (root namespace) ── veth ── services ── veth ── worker 1
                                          ├───── veth ── worker 2
                                          └───── veth ── worker 3

Each link is a /30 of its own. A namespace starts with forwarding off, so the services
namespace routes nothing between its links: a worker reaches the services namespace's address
on its own link and nothing else (not the root namespace, not another worker, not an API
process). Made with iproute2 (``ip netns``, ``ip link``), which needs root.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field


def available() -> str | None:
    """Why namespaces cannot be made here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no iproute2 (ip)"
    return None


def _ip(*args: str, netns: str | None = None) -> str:
    cmd = ["ip", *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Link:
    """One worker namespace and its link to the services namespace."""

    netns: str
    #: The services namespace's address on this link: where the worker finds PostgreSQL and S3.
    services_ip: str
    #: The worker's own address.
    own_ip: str

    def wrap(self) -> list[str]:
        """The command prefix that runs a process in this namespace."""
        return ["ip", "netns", "exec", self.netns]


@dataclass
class Network:
    services: str
    #: The services namespace's address on its link to the root namespace.
    services_ip: str
    #: The root namespace's address on that link.
    root_ip: str
    workers: list[Link] = field(default_factory=list)

    def services_wrap(self) -> list[str]:
        return ["ip", "netns", "exec", self.services]


def _free_subnet() -> int:
    """A second octet for 10.N.0.0/16 that no interface of the root namespace uses (only the
    root end of the services link lives there; the rest are private to their namespaces)."""
    used = _ip("-4", "-o", "addr")
    for _ in range(100):
        octet = random.randint(64, 250)
        if f" 10.{octet}." not in used:
            return octet
    raise RuntimeError("no free 10.N.0.0/16 subnet for the test's namespaces")


@contextlib.contextmanager
def network(workers: int) -> Iterator[Network]:
    """Make the namespaces and links for the block; remove them after it, whatever happened
    (the processes in them must have ended: a namespace lives on while a process uses it)."""
    tag = "br" + secrets.token_hex(3)
    octet = _free_subnet()
    made: list[str] = []
    root_end = f"{tag}r"
    net = Network(services=f"{tag}-svc", services_ip=f"10.{octet}.0.2", root_ip=f"10.{octet}.0.1")
    try:
        _ip("netns", "add", net.services)
        made.append(net.services)
        _ip("link", "set", "lo", "up", netns=net.services)
        _ip("link", "add", root_end, "type", "veth", "peer", "name", f"{tag}s0")
        _ip("link", "set", f"{tag}s0", "netns", net.services)
        _ip("addr", "add", f"{net.root_ip}/30", "dev", root_end)
        _ip("link", "set", root_end, "up")
        _ip("addr", "add", f"{net.services_ip}/30", "dev", f"{tag}s0", netns=net.services)
        _ip("link", "set", f"{tag}s0", "up", netns=net.services)
        for i in range(1, workers + 1):
            link = Link(
                netns=f"{tag}-w{i}", services_ip=f"10.{octet}.{i}.1", own_ip=f"10.{octet}.{i}.2"
            )
            _ip("netns", "add", link.netns)
            made.append(link.netns)
            _ip("link", "set", "lo", "up", netns=link.netns)
            svc_end, worker_end = f"{tag}s{i}", f"{tag}w{i}"
            _ip("link", "add", svc_end, "type", "veth", "peer", "name", worker_end)
            _ip("link", "set", svc_end, "netns", net.services)
            _ip("link", "set", worker_end, "netns", link.netns)
            _ip("addr", "add", f"{link.services_ip}/30", "dev", svc_end, netns=net.services)
            _ip("link", "set", svc_end, "up", netns=net.services)
            _ip("addr", "add", f"{link.own_ip}/30", "dev", worker_end, netns=link.netns)
            _ip("link", "set", worker_end, "up", netns=link.netns)
            net.workers.append(link)
        yield net
    finally:
        # Deleting a namespace deletes the veth ends in it, and so their peers.
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", root_end], capture_output=True, check=False)


def links_and_routes(netns: str) -> tuple[set[str], list[str]]:
    """A namespace's interface names and its routing table, one route a line."""
    names = {
        line.split(":")[1].strip().split("@")[0]
        for line in _ip("-o", "link", netns=netns).splitlines()
    }
    routes = [line.strip() for line in _ip("-4", "route", netns=netns).splitlines() if line]
    return names, routes


def listening_ports(netns: str) -> set[int]:
    """The TCP ports something listens on in ``netns`` (iproute2's ``ss``)."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-Htln"], capture_output=True, text=True, check=True
    ).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}
