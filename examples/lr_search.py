"""Random search over the learning rate and weight decay of the digits MLP, vmapped.

The usual advice for hyperparameters (Bergstra & Bengio 2012; the cs231n notes): search at
random rather than on a grid, on a log scale for rates and decay strengths, judge
on a validation set, and widen a range whose best value sits at its border. Here:

* a fifth of the training digits is held out for validation (the test set of
  ``linen_digits.py`` is not touched until the end);
* each trial trains the MLP of ``linen_digits.py`` with
  ``gradtx.inject_hyperparams(gradtx.adamw)``, its peak learning rate and its
  weight decay drawn log-uniformly, and returns the validation loss;
* ``gradtx.random_search(..., batched=True)`` runs all the trials at once, as one
  ``jax.vmap`` of the whole training in one compiled program (same initial
  weights and minibatch order for every trial, so only the hyperparameters
  differ);
* the best setting is trained again on all the training digits and scored on
  the test set.

    python examples/lr_search.py
    python examples/lr_search.py --trials 64 --epochs 30
    python examples/lr_search.py --quick        # 8 trials of 10 epochs

The last line printed is ``test accuracy: 0.xxxx``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
from linen_digits import (
    create_state,
    evaluate,
    hold_out,
    load_digits_split,
    shuffled_batches,
    train_steps,
)

import gradtx

SPACE = {
    "learning_rate": gradtx.training.log_uniform(1e-4, 1e-1),
    "weight_decay": gradtx.training.log_uniform(1e-5, 1.0),
}


def trainer(x, y, *, epochs: int, batch_size: int, seed: int):
    """``train(hyperparams) -> TrainState``: the whole training for one setting.

    Everything but the hyperparameters (the data, the initial weights, the
    minibatch order, the dropout masks) is fixed by ``seed``, so that trials
    differ in their hyperparameters only.
    """
    init_key, shuffle_key, dropout_key = jax.random.split(jax.random.key(seed), 3)
    batches = shuffled_batches(shuffle_key, len(y), batch_size, epochs).reshape(-1, batch_size)
    num_steps = batches.shape[0]

    def train(hyperparams):
        schedule = gradtx.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=hyperparams["learning_rate"],
            warmup_steps=num_steps // 10,
            decay_steps=num_steps,
        )
        tx = gradtx.inject_hyperparams(gradtx.adamw)(
            learning_rate=schedule, weight_decay=hyperparams["weight_decay"]
        )
        state, _ = train_steps(create_state(tx, init_key), x, y, batches, dropout_key)
        return state

    return train


def print_trials(result: gradtx.SearchResult, top: int = 5) -> None:
    ranked = sorted(result.trials, key=lambda t: (t.value != t.value, t.value))
    print(f"{'learning rate':>14} {'weight decay':>13} {'validation loss':>16}")
    for trial in ranked[:top]:
        h = trial.hyperparams
        print(f"{h['learning_rate']:14.2e} {h['weight_decay']:13.2e} {trial.value:16.4f}")
    print(f"... {len(ranked) - top} more" if len(ranked) > top else "")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24, help="settings tried")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the data per trial")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 trials of 10 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = min(args.trials, 8), min(args.epochs, 10)
    return args


def main(argv=None) -> float:
    args = parse_args(argv)
    data = load_digits_split()
    x_fit, y_fit, x_valid, y_valid = hold_out(data.x_train, data.y_train, 0.2, args.seed)
    options = dict(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    train_on_fit = trainer(x_fit, y_fit, **options)

    def validation_loss(hyperparams):
        loss, _ = evaluate(train_on_fit(hyperparams), x_valid, y_valid)
        return loss

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", gradtx.SearchBorderWarning)
        result = gradtx.random_search(
            validation_loss, SPACE, args.trials, key=args.seed, batched=True
        )
    seconds = time.perf_counter() - start
    print(f"{args.trials} trials of {args.epochs} epochs, vmapped, in {seconds:.1f} s")
    print_trials(result)
    for warning in caught:
        print(f"note: {warning.message}")
    best = result.best.hyperparams
    print(
        f"best: learning rate {best['learning_rate']:.2e}, weight decay "
        f"{best['weight_decay']:.2e}, validation loss {result.best.value:.4f}"
    )

    state = jax.jit(trainer(data.x_train, data.y_train, **options))(best)
    _, test_accuracy = evaluate(state, data.x_test, data.y_test)
    print(f"test accuracy: {float(test_accuracy):.4f}")
    return float(test_accuracy)


if __name__ == "__main__":
    main()
