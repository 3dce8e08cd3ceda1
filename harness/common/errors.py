"""Errors the harness raises for bad input or an unusable machine.

Each carries a message meant for a person; the CLI prints it and exits non-zero.
"""


class HarnessError(Exception):
    """Base for every error the harness reports without a traceback."""

    exit_code = 2


class SetupError(HarnessError):
    """The machine or the cache cannot provide what a run needs."""


class SpecError(HarnessError):
    """A runtime spec is malformed, names an unknown version, or a missing wheel."""


class HistoryError(HarnessError):
    """A history file is corrupt or truncated; the message names the line."""


class ScenarioError(HarnessError):
    """An unknown scenario or tier was asked for."""


class HostError(HarnessError):
    """The runtime host process died or broke its protocol."""


class ArrangementError(HarnessError):
    """A scenario's world could not be put in its planned state (boxes in their states, a
    fault injected): nothing can be judged, and the scenario fails saying why."""


class UsageError(HarnessError):
    """Command-line options that contradict each other or are out of range."""
