"""Why a target is missed, when the cause is known (profiled); shown in the
table next to a missed target.  docs/performance.md has the numbers."""
from __future__ import annotations

#: "target id@backend" -> the cause, found by profiling.
CAUSES = {}


def explain(target, result):
    cause = CAUSES.get(f"{target['id']}@{target['backend']}")
    return cause or "cause not profiled yet: see docs/performance.md"
