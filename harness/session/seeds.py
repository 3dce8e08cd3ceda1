"""The seed a run draws its generated cases from, and the cases earlier explorations pinned.

A gate draws from the committed GATE_SEED, so every gate run judges the same cases; `--seed S`
replays the cases of seed S; `--explore` draws a fresh seed, records it, and writes each
generated case that a check judged violated to the run folder as a line that can be pinned
in fixtures/hostile_cases.jsonl (replayed as an explicit example by every later run).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from harness.common.errors import SetupError
from harness.common.paths import PROJECT

SEED_ENV = "BOXLITE_CHAOS_SEED"
EXPLORE_ENV = "BOXLITE_CHAOS_EXPLORE"
# The gate's seed. Hypothesis with a fixed seed draws the same cases for the same code, so a
# gate's verdicts on one runtime depend only on the runtime (seen in `gate --repeat`).
GATE_SEED = 20261129
PINNED = PROJECT / "fixtures" / "hostile_cases.jsonl"
FINDINGS = "new-hostile-cases.jsonl"


def parse_seed(text: str) -> int:
    """A seed: a decimal integer 0 <= seed < 2**32. Raises SetupError otherwise."""
    if not text.strip().isdigit() or int(text) >= 2**32:
        raise SetupError(f"seed {text!r}: expected a whole number from 0 to {2**32 - 1}")
    return int(text)


def run_seed() -> int:
    """This run's seed: $BOXLITE_CHAOS_SEED (set by `gate --seed/--explore`), else GATE_SEED.
    Raises SetupError for a malformed value."""
    text = os.environ.get(SEED_ENV)
    return GATE_SEED if text is None else parse_seed(text)


def exploring() -> bool:
    """Whether this run explores a fresh seed (and writes its findings out)."""
    return os.environ.get(EXPLORE_ENV) == "1"


def fresh_seed() -> int:
    """A new seed for an exploring run."""
    return secrets.randbelow(2**32)


def load_pinned(path: Path | None = None) -> list[dict[str, Any]]:
    """The pinned cases: one JSON object per line ({family, kind, options, name, holder},
    with `seed` and `found` for the record), from `path` or PINNED. Raises SetupError
    naming a bad line."""
    path = path or PINNED
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict) or not {"family", "kind"} <= raw.keys():
                raise ValueError("needs at least 'family' and 'kind'")
        except ValueError as exc:
            raise SetupError(f"pinned cases {path}: line {n}: {exc}") from exc
        out.append(raw)
    return out


def write_finding(report: Path, case: dict[str, Any], seed: int, failing: list[str]) -> None:
    """Append a generated case that was judged violated to the run's findings, in the pinned
    format (one line, ready to copy into fixtures/hostile_cases.jsonl)."""
    line = json.dumps({**case, "origin": "pinned", "seed": seed, "found": failing},
                      ensure_ascii=True, sort_keys=True)
    with open(report / FINDINGS, "a") as fh:
        fh.write(line + "\n")
