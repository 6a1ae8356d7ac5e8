"""Fault injection for the crash tests: ``DSE_CRASH_AT=name:n`` SIGKILLs this process
the n-th time execution reaches the named point (``n`` defaults to 1).

The points sit between the durable steps of indexing and removal, so the tests can
prove that a kill -9 at any of them loses nothing and duplicates nothing.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """SIGKILL the current process if ``DSE_CRASH_AT`` names this point and count."""
    spec = os.environ.get("DSE_CRASH_AT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def crash_once(name: str, spec: str | None) -> None:
    """SIGKILL the current process the n-th time it reaches ``name``, once per marker file.

    ``spec`` is ``name:n:MARKER`` (from ``DSE_CRASH_ONCE``, forwarded by the driver to Ray
    workers): the marker file is created before the kill, so a restarted process (a Ray actor
    restarted after the kill) runs on instead of dying again.
    """
    if not spec:
        return
    target, _, rest = spec.partition(":")
    count, _, marker = rest.partition(":")
    if target != name or not marker or os.path.exists(marker):
        return
    _hits[name] += 1
    if _hits[name] >= int(count or 1):
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
