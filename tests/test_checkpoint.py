"""Checkpoints lose nothing: every state round-trips and the run goes on bit for bit.

* Every registry entry's state, after a few steps, goes through
  ``flax.serialization`` (``to_bytes``, then ``from_bytes`` into a template and
  ``msgpack_restore`` + :func:`gradtx.checkpoint.restore_state`) and through
  ``orbax-checkpoint`` (``StandardCheckpointer``, restored without a target +
  ``restore_state``); a run continued from each restored state equals the
  uninterrupted run exactly (same bytes). The continuation reuses the jitted
  step of the uninterrupted run, so any difference is in the state.
* A training process that checkpoints every few steps is killed with SIGKILL;
  a new process restores the latest complete checkpoint and finishes; its
  params equal those of an uninterrupted run exactly. The training loop is
  :func:`train` below, run as ``python -m tests.test_checkpoint DIR STEPS EVERY PACE``.
* A checkpoint from another configuration (other tree, other dtype, other
  shapes) is refused by ``restore_state`` with every difference named.

An orbax save and restore costs ~35 ms of CPU per entry (the jitted step's
compilation dominates each case), so every entry goes through both serializers.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import serialization

import gradtx
from gradtx.checkpoint import restore_state, state_differences
from tests.registry import REGISTRY, tiny_grads, tiny_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS_BEFORE, STEPS_AFTER = 3, 3


def _identical(a: Any, b: Any) -> list[str]:
    """The paths where two trees differ in structure, dtype, shape or any bit."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return [f"structure {jax.tree.structure(a)} != {jax.tree.structure(b)}"]
    differing = []
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
    ):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            differing.append(jax.tree_util.keystr(path))
    return differing


def _stepper(tx: gradtx.GradientTransformation):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    def run(params, state, steps):
        for i in steps:
            params, state = step(params, state, tiny_grads(i))
        return params, state

    return run


def _orbax_raw(item: Any, directory: pathlib.Path) -> Any:
    """Saves ``item`` with orbax and reads it back without a target (plain containers)."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory, item)
    checkpointer.wait_until_finished()
    return checkpointer.restore(directory)


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_state_round_trips_and_the_run_continues_bit_for_bit(entry, tmp_path):
    tx = entry.make()
    run = _stepper(tx)
    params, state = run(tiny_params(), tx.init(tiny_params()), range(STEPS_BEFORE))
    later = range(STEPS_BEFORE, STEPS_BEFORE + STEPS_AFTER)
    expected = run(params, state, later)
    template = tx.init(tiny_params())
    data = serialization.to_bytes(state)
    # orbax refuses a tree without leaves (a stateless block's state), so it gets
    # what a training loop saves anyway: the params and the state together.
    from_orbax = _orbax_raw({"params": params, "state": state}, tmp_path / "ckpt")
    assert _identical(restore_state(params, from_orbax["params"]), params) == []
    restored = {
        "flax from_bytes": serialization.from_bytes(template, data),
        "flax msgpack": restore_state(template, serialization.msgpack_restore(data)),
        "orbax": restore_state(template, from_orbax["state"]),
    }
    for how, restored_state in restored.items():
        assert _identical(restored_state, state) == [], how
        assert _identical(run(params, restored_state, later), expected) == [], how


# ---------------------------------------------------------------- another configuration


def _adam_state(**kwargs) -> Any:
    return gradtx.adam(0.1, **kwargs).init(tiny_params())


def test_another_dtype_is_refused_naming_every_leaf():
    with pytest.raises(ValueError) as error:
        restore_state(_adam_state(mu_dtype=jnp.bfloat16), _adam_state())
    message = str(error.value)
    for leaf in ("0/mu/w", "0/mu/b"):
        assert f"{leaf}: dtype float32, expected bfloat16" in message
    assert "nu" not in message


def test_another_tree_is_refused_naming_the_paths():
    momentum = gradtx.sgd(0.1, momentum=0.9).init(tiny_params())
    raw = serialization.msgpack_restore(serialization.to_bytes(momentum))
    with pytest.raises(ValueError) as error:
        restore_state(_adam_state(), raw)
    message = str(error.value)
    assert "missing: 0/count, 0/mu/b, 0/mu/w, 0/nu/b, 0/nu/w" in message
    assert "not in the template: 0/trace/b, 0/trace/w" in message


def test_other_shapes_are_refused():
    other = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"0/mu/w: shape \(3, 2\), expected \(2, 3\)"):
        restore_state(_adam_state(), gradtx.adam(0.1).init(other))


def test_an_orbax_checkpoint_of_another_configuration_is_refused(tmp_path):
    raw = _orbax_raw(_adam_state(), tmp_path / "adam")
    amsgrad = gradtx.amsgrad(0.1).init(tiny_params())
    with pytest.raises(ValueError, match="missing: 0/nu_max/b, 0/nu_max/w"):
        restore_state(amsgrad, raw)


def test_differences_are_all_collected():
    template = {"a": jnp.zeros(2, jnp.int32), "b": jnp.zeros(3), "c": jnp.zeros(())}
    restored = {"a": np.zeros(2, np.int64), "b": np.zeros(4, np.float32), "d": 1.0}
    assert state_differences(template, restored) == [
        "missing: c",
        "not in the template: d",
        "a: dtype int64, expected int32",
        "b: shape (4,), expected (3,)",
    ]


def test_python_numbers_are_taken_only_when_exact():
    template = {"count": jnp.zeros((), jnp.int32), "scale": jnp.zeros((), jnp.float32)}
    restored = restore_state(template, {"count": 7, "scale": 0.5})
    assert restored["count"].dtype == jnp.int32 and int(restored["count"]) == 7
    with pytest.raises(ValueError, match="count: the number 1.5 is not exactly a int32"):
        restore_state(template, {"count": 1.5, "scale": 0.5})
    with pytest.raises(ValueError, match="scale: a str, expected an array"):
        restore_state(template, {"count": 1, "scale": "0.5"})


def test_an_abstract_template_is_enough():
    state = _adam_state()
    template = jax.eval_shape(lambda: state)
    restored = restore_state(template, serialization.msgpack_restore(serialization.to_bytes(state)))
    assert _identical(restored, state) == []
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(restored))


# ---------------------------------------------------------------- killed mid-run


def _problem() -> tuple[gradtx.GradientTransformation, Any]:
    schedule = gradtx.warmup_cosine_decay_schedule(0.0, 0.05, 5, 40)
    tx = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.ranger(schedule, sync_period=3))
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    return tx, params


def _batch(step: int) -> tuple[jax.Array, jax.Array]:
    # The data of a step depends on the step alone, so a resumed run sees the same.
    rng = np.random.default_rng(step)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = x @ np.arange(12, dtype=np.float32).reshape(4, 3) / 10 + 0.5
    return jnp.asarray(x), jnp.asarray(y)


def _loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def _checkpoints(directory: pathlib.Path) -> dict[int, pathlib.Path]:
    """The complete checkpoints: those renamed into place, by step."""
    found = {}
    for path in directory.glob("ckpt_*.msgpack"):
        match = re.fullmatch(r"ckpt_(\d+)\.msgpack", path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def _save(directory: pathlib.Path, step: int, params: Any, state: Any) -> None:
    """Writes a checkpoint whole or not at all: a temporary file, fsync, rename."""
    final = directory / f"ckpt_{step:06d}.msgpack"
    partial = final.with_name(final.name + ".partial")
    with open(partial, "wb") as f:
        f.write(serialization.to_bytes({"params": params, "state": state}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, final)


def train(steps: int, every: int, directory: pathlib.Path | None, pace: float = 0.0) -> Any:
    """Trains for ``steps``, checkpointing every ``every`` steps into ``directory``.

    Resumes from the latest complete checkpoint there, if any. After each
    checkpoint it prints ``checkpoint <step>`` and waits ``pace`` seconds (a
    slower training step, so that a kill lands mid-run). Returns the params.
    """
    tx, params = _problem()
    state, start = tx.init(params), 0
    if directory is not None and _checkpoints(directory):
        start = max(_checkpoints(directory))
        raw = serialization.msgpack_restore(_checkpoints(directory)[start].read_bytes())
        params = restore_state(params, raw["params"])
        state = restore_state(state, raw["state"])
        print(f"resumed {start}", flush=True)

    @jax.jit
    def step(params, state, x, y):
        updates, state = tx.update(jax.grad(_loss)(params, x, y), state, params)
        return gradtx.apply_updates(params, updates), state

    for i in range(start, steps):
        params, state = step(params, state, *_batch(i))
        if directory is not None and (i + 1) % every == 0:
            _save(directory, i + 1, params, state)
            print(f"checkpoint {i + 1}", flush=True)
            time.sleep(pace)
    return params


def _train_in_subprocess(directory, steps, every, pace):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "tests.test_checkpoint",
        str(directory),
        str(steps),
        str(every),
        str(pace),
    ]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path):
    steps, every, seen_before_kill = 40, 4, 3
    first = _train_in_subprocess(tmp_path, steps, every, pace=0.2)
    seen = 0
    for line in first.stdout:
        seen += line.startswith("checkpoint")
        if seen == seen_before_kill:
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    stderr = first.stderr.read()
    first.stdout.close()
    first.stderr.close()
    assert first.returncode == -signal.SIGKILL, stderr[-2000:]
    done = max(_checkpoints(tmp_path))
    assert seen_before_kill * every <= done < steps
    # A write the kill interrupted is never taken for a checkpoint.
    (tmp_path / f"ckpt_{steps:06d}.msgpack.partial").write_bytes(b"\x85torn")

    second = _train_in_subprocess(tmp_path, steps, every, pace=0.0)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-2000:]
    assert out.splitlines()[0] == f"resumed {done}"
    resumed = serialization.msgpack_restore((tmp_path / "final.msgpack").read_bytes())
    expected = train(steps, every, directory=None)
    assert _identical(restore_state(expected, resumed), expected) == []


if __name__ == "__main__":
    directory, steps, every, pace = sys.argv[1:5]
    final = train(int(steps), int(every), pathlib.Path(directory), float(pace))
    (pathlib.Path(directory) / "final.msgpack").write_bytes(serialization.to_bytes(final))
