"""``gradtx.contrib`` mirrors ``optax.contrib``: same names, same objects as the top level.

Each name it holds is one Optax 0.2.8 has under ``optax.contrib``, it is the very
object exported at ``gradtx``'s top level (so it is documented and tested once,
there), and its parameters are Optax's, in Optax's order.
"""

from __future__ import annotations

import inspect

import optax
import optax.contrib
import pytest

import gradtx
import gradtx.contrib

# Names whose top-level gradtx spelling differs from Optax's contrib spelling.
TOP_LEVEL_NAME = {"ReduceLROnPlateauState": "ReduceOnPlateauState"}


def test_contrib_all_lists_exactly_what_it_holds():
    assert set(gradtx.contrib.__all__) == {
        name
        for name in vars(gradtx.contrib)
        if name.isidentifier() and not name.startswith("_") and name != "annotations"
    }


@pytest.mark.parametrize("name", gradtx.contrib.__all__)
def test_every_contrib_name_is_optaxs_and_the_top_level_object(name):
    assert hasattr(optax.contrib, name), f"optax.contrib has no {name}"
    ours = getattr(gradtx.contrib, name)
    assert ours is getattr(gradtx, TOP_LEVEL_NAME.get(name, name))
    theirs = getattr(optax.contrib, name)
    if inspect.isfunction(theirs):
        mine = list(inspect.signature(ours).parameters)
        optaxs = list(inspect.signature(theirs).parameters)
        assert mine[: len(optaxs)] == optaxs
    else:
        assert ours._fields == theirs._fields
