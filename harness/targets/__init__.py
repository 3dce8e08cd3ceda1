"""Targets: the runtimes the canonical failure pattern is judged against, behind one seam.

BoxLite (harness.targets.boxlite) is the runtime under test; Docker (harness.targets.docker)
is the reference that upstream named when it chose to keep failed records. The pattern checks
(harness.targets.pattern) and scenarios/conformance run unchanged against either.
"""

KINDS = ("docker", "boxlite")
