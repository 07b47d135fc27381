"""Early stopping on the digits MLP (Goodfellow et al. 2016, Alg. 7.1), then Alg. 7.2 and 7.3.

Early stopping picks the number of training steps on a validation set; the
book then gives two ways to use the validation digits for training too:

1. Alg. 7.1: split the training digits into *subtrain* (80%) and *valid* (20%),
   train on subtrain, measure the validation loss every epoch, and stop when it
   has not improved for ``--patience`` epochs. ``gradtx.run_early_stopping``
   runs the whole loop in one ``lax.while_loop`` and returns the best step
   ``i*`` (and a copy of the best training state).
2. Alg. 7.2: start again from fresh weights and train on all the training
   digits for ``i*`` steps (``gradtx.retrain_for_best_steps``).
3. Alg. 7.3: continue from where Alg. 7.1 stopped, training on all the
   training digits until the validation loss falls to the subtrain loss
   recorded at the stopping point (``gradtx.continue_until_target``).

The model, data and training step are those of ``linen_digits.py``, with a
constant learning rate (a schedule that decays over a planned number of steps
would itself decide when learning stops). The training state (a Flax
``TrainState``) is the *carry* of the loops; one step draws a random minibatch.

    python examples/early_stopping.py
    python examples/early_stopping.py --patience 10 --learning-rate 3e-3
    python examples/early_stopping.py --quick

The last two lines printed are ``test accuracy (Alg. 7.2): 0.xxxx`` and
``test accuracy (Alg. 7.3): 0.xxxx``.
"""

from __future__ import annotations

import argparse
import time

import jax
from linen_digits import (
    TrainState,
    create_state,
    cross_entropy,
    evaluate,
    hold_out,
    load_digits_split,
    predict,
    train_step,
)

import gradtx


def make_step(x: jax.Array, y: jax.Array, batch_size: int, key: jax.Array):
    """``step(state) -> state``: one step on a random minibatch of ``(x, y)``.

    The minibatch (drawn without replacement) and the dropout mask both come from
    ``fold_in(key, state.step)``, so a loop over ``step`` needs nothing but the
    state.
    """
    batch_key, dropout_key = jax.random.split(key)

    def step(state: TrainState) -> TrainState:
        rows = jax.random.choice(
            jax.random.fold_in(batch_key, state.step), len(y), (batch_size,), replace=False
        )
        state, _ = train_step(state, x[rows], y[rows], dropout_key)
        return state

    return step


def make_loss(x: jax.Array, y: jax.Array):
    """``loss(state) -> scalar``: the loss on ``(x, y)`` in evaluation mode."""
    return lambda state: cross_entropy(predict(state, x), y)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patience", type=int, default=5, help="evaluations, one per epoch")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="patience 3, at most 60 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.patience, args.max_epochs = min(args.patience, 3), min(args.max_epochs, 60)
    return args


def main(argv=None) -> tuple[float, float]:
    args = parse_args(argv)
    data = load_digits_split()
    x_sub, y_sub, x_valid, y_valid = hold_out(data.x_train, data.y_train, 0.2, args.seed)
    epoch = len(y_sub) // args.batch_size  # steps between two evaluations
    init_key, step_key = jax.random.split(jax.random.key(args.seed))
    tx = gradtx.adamw(args.learning_rate)
    step_on_sub = make_step(x_sub, y_sub, args.batch_size, step_key)
    step_on_all = make_step(data.x_train, data.y_train, args.batch_size, step_key)
    valid_loss = make_loss(x_valid, y_valid)

    start = time.perf_counter()
    stopped, stopper = gradtx.run_early_stopping(
        step_on_sub,
        valid_loss,
        create_state(tx, init_key),
        patience=args.patience,
        eval_every=epoch,
        max_steps=args.max_epochs * epoch,
    )
    best_step = int(stopper.best_step)
    print(
        f"Alg. 7.1: stopped after {int(stopper.step)} steps; best validation loss "
        f"{float(stopper.best_value):.4f} at step i* = {best_step} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    _, accuracy = evaluate(stopper.best_params, data.x_test, data.y_test)
    print(f"  its best state (trained on subtrain only): test accuracy {float(accuracy):.4f}")

    retrained = gradtx.retrain_for_best_steps(step_on_all, create_state(tx, init_key), best_step)
    _, accuracy_72 = evaluate(retrained, data.x_test, data.y_test)
    print(
        f"Alg. 7.2: trained afresh on all {len(data.y_train)} training digits for {best_step} steps"
    )

    target = make_loss(x_sub, y_sub)(stopped)
    continued = gradtx.continue_until_target(
        step_on_all,
        valid_loss,
        stopped,
        target,
        eval_every=epoch,
        max_steps=args.max_epochs * epoch,
    )
    _, accuracy_73 = evaluate(continued.carry, data.x_test, data.y_test)
    print(
        f"Alg. 7.3: from the stopping point, {int(continued.steps)} more steps on all the "
        f"training digits brought the validation loss to {float(continued.value):.4f} "
        f"(target: the subtrain loss {float(target):.4f}; reached: {bool(continued.reached)})"
    )
    print(f"test accuracy (Alg. 7.2): {float(accuracy_72):.4f}")
    print(f"test accuracy (Alg. 7.3): {float(accuracy_73):.4f}")
    return float(accuracy_72), float(accuracy_73)


if __name__ == "__main__":
    main()
