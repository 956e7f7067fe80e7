"""vswitch/heap.py: after `settle` the heap keeps what frames freed instead of trimming it and
growing again batch after batch (glibc)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import ctypes, sys
from vswitch import heap
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]
if sys.argv[1] == "settled":
    heap.settle()
before = libc.sbrk(0)
frames = [bytes(65_000) for _ in range(40)]  # 2.6 MB of frame-sized blocks, on the heap
grown = libc.sbrk(0)
del frames
print(grown > before, libc.sbrk(0) < grown)
"""


def probe(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_settled_heap_keeps_what_frames_freed() -> None:
    assert probe("default") == "True True"  # glibc's default: grown, then given back
    assert probe("settled") == "True False"  # kept for the next batch
