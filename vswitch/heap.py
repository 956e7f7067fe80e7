"""The process heap of a node or a worker: glibc malloc's trimming moved off the data path.

A forwarding batch allocates and frees frames of up to 64 KiB (TSO), and the carp path copies
them. glibc gives the top of the heap back to the system as soon as more than M_TRIM_THRESHOLD
(128 KiB by default) is free there, and the next frames grow it again: a brk and freshly zeroed
pages, batch after batch. Through the carp path TCP carried 3.5 Gbit/s that way, 7-9 Gbit/s with
the heap kept (bench/throughput.py, vswitch-carp). So once start-up is over, what it freed is
given back (RSS is what a node costs) and from then on the heap keeps up to KEEP bytes free, and
no frame-sized block goes to mmap.
"""

import contextlib
import ctypes

M_TRIM_THRESHOLD = -1  # mallopt(3) parameters
M_MMAP_THRESHOLD = -3
KEEP = 16 << 20  # free bytes the heap keeps: a few batches of 64 KiB frames in every port queue
MMAP_THRESHOLD = 1 << 20  # larger blocks (a layout, a big status) are mmapped and unmapped


def settle() -> None:
    """After start-up: trim the heap once, then keep it (glibc only; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
