"""Many flows at once from one lab namespace, and who answers them: pings from many source
addresses, a UDP server that echoes (or answers with a name), and one UDP datagram per source
with every answer it got back, which shows both lost and duplicated flows.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from vswitch.lab.netns import Lab

# a UDP server on addr:port: answers each datagram with `reply`, or with the datagram itself
_SERVER = """
import socket, sys
addr, port, ready, reply = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, port))
open(ready, "w").close()
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(reply[0].encode() if reply else data, peer)
"""

# one datagram (its source address) from each source to dst:port; prints source -> answers,
# gathered until every flow has one or the timeout, then `grace` seconds more for duplicates
_FLOWS = """
import json, selectors, socket, sys, time
dst, port, timeout, grace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
answers = {}
for src in sys.argv[5:]:
    s = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, src)
    answers[src] = []
    s.sendto(src.encode(), (dst, port))
end = time.monotonic() + timeout
while time.monotonic() < end:
    if all(answers.values()):
        end = min(end, time.monotonic() + grace)
    for key, _ in sel.select(max(0.0, end - time.monotonic())):
        while True:
            try:
                data = key.fileobj.recv(2048)
            except BlockingIOError:
                break
            answers[key.data].append(data.decode(errors="replace"))
print(json.dumps(answers))
"""


def udp_server(
    lab: Lab, netns: str, addr: str, port: int, directory: str, reply: str | None = None
) -> subprocess.Popen[bytes]:
    """Start the UDP server in `netns` (a lab process: it ends with the lab) and wait until it
    is bound; `directory` holds the file by which it says so."""
    ready = os.path.join(directory, f"udp-{netns}-{addr}-{port}.ready")
    argv = [sys.executable, "-c", _SERVER, addr, str(port), ready]
    proc = lab.spawn(netns, argv + ([reply] if reply is not None else []))
    end = time.monotonic() + 10
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"the UDP server on {addr}:{port} in {netns} did not start")
        time.sleep(0.02)
    return proc


def udp_answers(
    lab: Lab,
    netns: str,
    sources: Sequence[str],
    dst: str,
    port: int,
    *,
    timeout: float = 5.0,
    grace: float = 0.5,
) -> dict[str, list[str]]:
    """One datagram from each source address in `netns` (one flow each) to dst:port; source ->
    the answers that came back (none: lost; several: duplicated)."""
    argv = [sys.executable, "-c", _FLOWS, dst, str(port), f"{timeout:g}", f"{grace:g}"]
    out = lab.run(netns, [*argv, *sources], timeout=timeout + grace + 30).stdout
    answers: dict[str, list[str]] = json.loads(out)
    return answers


def ping_many(
    lab: Lab, netns: str, sources: Sequence[str], dst: str, *, wait: float = 2.0
) -> dict[str, bool]:
    """One echo request from each source address to `dst`, all at once; source -> answered
    (ping -c 1 stops at the first reply: count duplicates on the wire)."""
    procs = {
        src: subprocess.Popen(
            lab.argv(netns, ["ping", "-n", "-q", "-c", "1", "-W", f"{wait:g}", "-I", src, dst]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for src in sources
    }
    try:
        return {src: p.wait(wait + 10) == 0 for src, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
