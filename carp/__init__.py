"""The CARP protocol core of vswitch-carp: sans-IO, byte-compatible with OpenBSD's carp(4).

Nothing in this package touches sockets, TAPs, clocks, randomness, asyncio or subprocesses. Every
entry point takes ``now`` (monotonic seconds, a float) and returns typed actions
(:mod:`carp.actions`); the caller owns every side effect. Where we follow design.md rather than
current OpenBSD, see ``docs/deviations.md``.
"""
