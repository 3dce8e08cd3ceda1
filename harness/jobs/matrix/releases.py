"""The runtime's published releases, in order, and version ranges over them.

The list is PyPI's (`pip index versions boxlite`, 2026-11-29): fifteen releases, 0.9.2 and 0.9.6
were never published. 0.9.0–0.9.4 pull their guest base image at first start, so the harness
serves it from a loopback registry (harness.runtime.registry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from harness.runtime.spec import RuntimeSpec

RELEASES: tuple[str, ...] = (
    "0.9.0", "0.9.1", "0.9.3", "0.9.4", "0.9.5", "0.9.7",
    "0.10.0", "0.10.1", "0.10.2", "0.10.3", "0.10.4", "0.10.5", "0.10.6", "0.10.7", "0.10.8",
)


def release_specs() -> list[str]:
    """Every published release as a runtime spec (`boxlite==X`), oldest first."""
    return [f"boxlite=={v}" for v in RELEASES]


def version_of(spec: str) -> str | None:
    """The release a `boxlite==X` spec names, or None for a wheel or another form.
    Raises SpecError for a spec the harness cannot parse."""
    parsed = RuntimeSpec.parse(spec)
    return parsed.version if parsed.kind == "release" else None


def order_specs(specs: Iterable[str]) -> list[str]:
    """The specs with releases oldest first and anything else (a wheel) after them, in the
    order given; duplicates dropped. Raises SpecError for a malformed spec."""
    seen: dict[str, None] = {}
    for s in specs:
        seen.setdefault(s, None)
    releases = [s for s in seen if version_of(s) is not None]
    others = [s for s in seen if version_of(s) is None]
    releases.sort(key=lambda s: Version(version_of(s) or "0"))
    return releases + others


def span_specifier(versions: Iterable[str], ran: Sequence[str]) -> str | None:
    """The narrowest PEP 440 range naming exactly `versions` among the releases that `ran`
    (both oldest first): '==0.10.8', '>=0.9.5,<=0.10.8'; None when `versions` is empty.

    Raises ValueError when `versions` is not contiguous in `ran` (a release between them held),
    since one range would then claim a release that was measured not to have the bug.
    """
    wanted = set(versions)
    if not wanted:
        return None
    idx = sorted(ran.index(v) for v in wanted)
    if idx[-1] - idx[0] + 1 != len(idx):
        gaps = [ran[i] for i in range(idx[0], idx[-1]) if ran[i] not in wanted]
        raise ValueError(f"not contiguous: {', '.join(gaps)} held between "
                         f"{ran[idx[0]]} and {ran[idx[-1]]}")
    first, last = ran[idx[0]], ran[idx[-1]]
    return f"=={first}" if first == last else f">={first},<={last}"


def spans(versions: Iterable[str], ran: Sequence[str]) -> list[str]:
    """The ranges naming exactly `versions` among the releases that `ran`, one per contiguous
    run of them: ['==0.9.0', '>=0.9.5,<=0.10.8'] when 0.9.1-0.9.4 held in between; [] when
    `versions` is empty."""
    wanted = set(versions)
    out: list[str] = []
    block: list[str] = []
    for v in [*ran, None]:
        if v is not None and v in wanted:
            block.append(v)
            continue
        if block:
            out.append(span_specifier(block, ran) or "")
            block = []
    return out


def covered(specifier: SpecifierSet, ran: Sequence[str]) -> list[str]:
    """Which of the releases that ran a version range contains."""
    out = []
    for v in ran:
        try:
            if Version(v) in specifier:
                out.append(v)
        except InvalidVersion:
            continue
    return out

