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
