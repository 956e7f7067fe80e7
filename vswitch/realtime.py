"""`[node] rt_priority`: the node process under SCHED_RR with its memory locked.

keepalived's answer to a VRRP process that must advertise on time whatever else the machine does
(`vrrp_rt_priority`, and no swapping). Here it is meant for the node process with forwarding
workers (`[node] workers`): that process then runs only the protocol, the control socket and the
socket ports, so a real-time priority costs the machine little and its advertisements leave on
time even while the workers and their traffic take every core. SCHED_RESET_ON_FORK: the workers
and hooks it starts run at normal priority.
"""

import ctypes
import os

MCL_CURRENT = 1
MCL_FUTURE = 2


def set_realtime(priority: int) -> None:
    """SCHED_RR at `priority` (1..99) for the calling thread, and mlockall; OSError says why
    not (EPERM: root or CAP_SYS_NICE and CAP_IPC_LOCK needed)."""
    policy = os.SCHED_RR | os.SCHED_RESET_ON_FORK
    os.sched_setscheduler(0, policy, os.sched_param(priority))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mlockall: {os.strerror(code)}")


def scheduling() -> dict[str, object]:
    """The calling thread's policy and priority, for status."""
    policy = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
    names = {os.SCHED_OTHER: "other", os.SCHED_RR: "rr", os.SCHED_FIFO: "fifo"}
    return {
        "policy": names.get(policy, str(policy)),
        "priority": os.sched_getparam(0).sched_priority,
    }
