"""get_or_create by name answers the box of that name: the one that has it, or a new one given
it; never another box.

Seen on 0.10.8 and Node 0.10.0: name "g" answered box gLFipDddSrdE, named "subject",
created=false. In boxlite-ai/boxlite's source, RuntimeImpl::create_inner
(boxlite/src/runtime/rt_impl.rs) looks the name up with BoxManager::lookup_box
(boxlite/src/litebox/manager.rs), the resolver of get/get_info/remove's `id_or_name`: an exact
id, then an exact name, then a unique id prefix. So a name no box has that begins exactly one
box's id answers that box (created false), and a box that has the name still wins over another
box whose id it begins. Measured 2026-12-06 (never-started boxes): the prefix cases violated on
Python 0.9.4, 0.9.7, 0.10.0, 0.10.8 and Node 0.9.7, 0.10.0, every run; the name still won over
an id it begins on all of them. The same lookup makes `create(name=N)` refuse an N that begins
an id ("box with name 'e' already exists", "multiple boxes match prefix 'h'"): noted, not judged.

Boxes are created, never started: seconds per case, the same through the Python and the Node
host. A release or host without get_or_create answers OpUnsupported: skipped (every cached
release from 0.9.4 has it).
"""

from __future__ import annotations

import string
from typing import Any

import pytest

from harness.common.errors import ArrangementError
from harness.judge import operation_checks as opchecks
from harness.runtime.host import RuntimeHost
from harness.scenario import operations as ops
from harness.scenario.context import Chaos
from harness.scenario.steps import create_box

pytestmark = pytest.mark.tier("init")

# A box id's characters, as far as any release shows them (base62); a name with a character
# outside it (a hyphen) can never begin an id.
ID_CHARS = string.ascii_letters + string.digits


def get_or_create(chaos: Chaos, host: RuntimeHost, name: str) -> dict[str, Any] | None:
    """The op's answer ({"id", "created"}; None: it raised, noted). Skips where the release
    lacks the op."""
    reply, exc = host.try_call("get_or_create", timeout_s=120, options=chaos.box_options(),
                               name=name)
    if exc is not None and ops.unsupported(exc):
        pytest.skip(f"get_or_create is not in this release: {exc.message}")
    chaos.note(op="get_or_create", name=name, reply=reply,
               error=None if exc is None else {"type": exc.type, "message": exc.message})
    return reply


def judge_by_name(chaos: Chaos, host: RuntimeHost, name: str, reply: dict[str, Any] | None,
                  named_before: bool, label: str) -> None:
    info = None if reply is None else host.call("get_info", box_id=reply["id"])
    chaos.judge(opchecks.get_or_create_by_name(name, reply, info, named_before=named_before,
                                               label=label))


@pytest.mark.parametrize("prefix_len", [1, 4], ids=["id_prefix_1", "id_prefix_4"])
def test_a_name_that_begins_a_box_id_gets_a_box_of_that_name(chaos, prefix_len):
    host = chaos.host()
    subject = create_box(chaos, host, name="subject")
    name = subject[:prefix_len]
    chaos.note(subject=subject, asked_name=name)
    # The path of the sighting: no box has the name, one box's id begins with it.
    chaos.witness("get_or_create_name_begins_an_id", asked_name=name, box=subject)
    reply = get_or_create(chaos, host, name)
    judge_by_name(chaos, host, name, reply, named_before=False, label=f"id_prefix_{prefix_len}")


def test_an_existing_name_gets_its_box_and_a_fresh_name_a_new_one(chaos):
    host = chaos.host()
    subject = create_box(chaos, host, name="subject")
    found = get_or_create(chaos, host, "subject")
    chaos.note(subject=subject, found=found)
    judge_by_name(chaos, host, "subject", found, named_before=True, label="existing_name")
    fresh = "fresh-box"     # the hyphen: never the beginning of an id
    made = get_or_create(chaos, host, fresh)
    judge_by_name(chaos, host, fresh, made, named_before=False, label="fresh_name")
    again = get_or_create(chaos, host, fresh)
    judge_by_name(chaos, host, fresh, again, named_before=True, label="fresh_name_again")


def test_a_name_that_a_box_has_wins_over_an_id_it_begins(chaos):
    """Boxes named by one character each until a later box's id begins with the name of an
    earlier one (about 11 creates: ids are random); get_or_create of that name answers the
    box named so. A create refused because its name begins an id is noted, not judged."""
    host = chaos.host()
    named: dict[str, str] = {}          # one-character name -> the box that has it
    ids: list[str] = []
    refused: dict[str, str] = {}
    for c in ID_CHARS:
        reply, exc = host.try_call("create", timeout_s=120, options=chaos.box_options(),
                                   name=c)
        if exc is not None:
            refused[c] = exc.message
            continue
        named[c] = reply["id"]
        ids.append(reply["id"])
        hit = next(((n, b) for n, b in named.items()
                    for i in ids if i != b and i.startswith(n)), None)
        if hit:
            break
    else:
        raise ArrangementError(f"no box id began with an earlier box's name in {len(ids)} "
                               "creates")
    name, owner = hit
    chaos.note(named=named, refused=refused, asked_name=name, owner=owner,
               id_beginning_it=[i for i in ids if i != owner and i.startswith(name)])
    reply = get_or_create(chaos, host, name)
    judge_by_name(chaos, host, name, reply, named_before=True, label="name_over_id_prefix")
