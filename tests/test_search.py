"""Random search: the distributions drawn, batched = sequential, the border warning, refine.

Distribution checks use a fixed key and many draws, so they are deterministic;
the thresholds (KS p-value > 0.01 where the law holds, < 1e-6 where it must not)
are far from the values observed. The batched (vmap) and the sequential search
run the same float32 training, compiled as one vmapped program or one call per
trial; XLA may fuse them differently, hence ``rtol = 1e-5`` between the two.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gradtx
from gradtx.training.search import (
    SearchBorderWarning,
    SearchResult,
    Trial,
    choice,
    integer,
    log_uniform,
    random_search,
    refine,
    uniform,
)

RTOL_BATCHED = 1e-5

SPACE = {
    "learning_rate": log_uniform(1e-5, 1e-1),
    "momentum": uniform(0.1, 0.3),  # bounds float32 cannot represent exactly
    "layers": integer(2, 5),
    "optimizer": choice(["adam", "sgd", "rmsprop"]),
}


def _draws(space, num, key=0):
    """The hyperparameters the search tried, column by column (objective: constant)."""
    result = random_search(lambda h: 0.0, space, num, key, border_fraction=0.0)
    return {name: [t.hyperparams[name] for t in result.trials] for name in space}


@contextlib.contextmanager
def _quiet():
    """A context in which any warning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------- what is drawn


def test_samples_stay_in_range_and_have_python_types():
    draws = _draws(SPACE, 3000)
    assert all(type(v) is float and 1e-5 <= v <= 1e-1 for v in draws["learning_rate"])
    assert all(type(v) is float and 0.1 <= v <= 0.3 for v in draws["momentum"])
    assert all(type(v) is int for v in draws["layers"])
    assert set(draws["layers"]) == {2, 3, 4, 5}  # both ends included
    assert set(draws["optimizer"]) == {"adam", "sgd", "rmsprop"}


def test_log_uniform_is_uniform_in_log_space_not_in_linear_space():
    lr = np.asarray(_draws({"lr": log_uniform(1e-5, 1e-1)}, 2000)["lr"])
    in_log = stats.kstest(np.log10(lr), stats.uniform(loc=-5, scale=4).cdf)
    in_linear = stats.kstest(lr, stats.uniform(loc=1e-5, scale=1e-1 - 1e-5).cdf)
    assert in_log.pvalue > 0.01
    assert in_linear.pvalue < 1e-6
    # Each decade gets about a quarter of the draws.
    counts = np.histogram(np.log10(lr), bins=[-5, -4, -3, -2, -1])[0]
    np.testing.assert_allclose(counts / 2000, 0.25, atol=0.04)


def test_uniform_integer_and_choice_laws():
    draws = _draws(SPACE, 2000, key=3)
    momentum = stats.kstest(draws["momentum"], stats.uniform(loc=0.1, scale=0.2).cdf)
    assert momentum.pvalue > 0.01
    for name, support in (("layers", [2, 3, 4, 5]), ("optimizer", ["adam", "sgd", "rmsprop"])):
        counts = [draws[name].count(s) for s in support]
        assert stats.chisquare(counts).pvalue > 0.01, (name, counts)


def test_the_same_key_gives_the_same_trials_and_an_int_seed_is_a_key():
    a = _draws(SPACE, 20, key=5)
    assert a == _draws(SPACE, 20, key=jax.random.key(5))
    assert a != _draws(SPACE, 20, key=6)


# ---------------------------------------------------------------- best and batched


def _train(h):
    """Final loss of 40 steps of SGD with momentum (injected) on a least-squares problem."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
    y = x @ jnp.asarray([1.0, -2.0, 0.5, 3.0]) + 0.1
    penalty = h["penalty"]

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2) + penalty * jnp.sum(p["w"] ** 2)

    tx = gradtx.inject_hyperparams(gradtx.sgd)(
        learning_rate=h["learning_rate"], momentum=h["momentum"]
    )
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return (gradtx.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=40)
    return loss(params) * h["scale"]


TRAIN_SPACE = {
    "learning_rate": log_uniform(1e-3, 0.3),
    "momentum": uniform(0.0, 0.9),
    "penalty": choice([0.0, 0.01]),
    "scale": integer(1, 3),
}


def test_batched_vmap_equals_sequential_on_the_same_trials():
    sequential = random_search(jax.jit(_train), TRAIN_SPACE, 12, key=0, border_fraction=0.0)
    batched = random_search(_train, TRAIN_SPACE, 12, key=0, batched=True, border_fraction=0.0)
    chunked = random_search(
        _train, TRAIN_SPACE, 12, key=0, batched=True, batch_size=5, border_fraction=0.0
    )
    for other in (batched, chunked):
        assert [t.hyperparams for t in other.trials] == [t.hyperparams for t in sequential.trials]
        np.testing.assert_allclose(
            [t.value for t in other.trials],
            [t.value for t in sequential.trials],
            rtol=RTOL_BATCHED,
        )
    assert batched.best.hyperparams == sequential.best.hyperparams


def test_the_best_trial_is_the_lowest_and_nan_ranks_last():
    # Rates above 0.05 diverge (NaN); the loss is lowest near 0.01 otherwise.
    def objective(h):
        lr = h["learning_rate"]
        return math.nan if lr > 0.05 else (math.log10(lr) + 2) ** 2

    with _quiet():
        result = random_search(objective, {"learning_rate": log_uniform(1e-4, 1.0)}, 40, 0)
    finite = [t.value for t in result.trials if not math.isnan(t.value)]
    assert any(math.isnan(t.value) for t in result.trials)
    assert result.best.value == min(finite)
    assert isinstance(result, SearchResult) and len(result.trials) == 40
    best_max = random_search(objective, {"learning_rate": log_uniform(1e-4, 1.0)}, 40, 0,
                             maximize=True, border_fraction=0.0)  # fmt: skip
    assert best_max.best.value == max(finite)


def test_every_trial_nan_warns():
    with pytest.warns(RuntimeWarning, match="every trial returned NaN"):
        result = random_search(lambda h: math.nan, {"x": uniform(0.0, 1.0)}, 3, 0)
    assert math.isnan(result.best.value) and result.at_border == ()


# ---------------------------------------------------------------- the border warning


def _distance_to(target):
    return lambda h: abs(math.log(h["learning_rate"]) - math.log(target))


def test_border_warning_fires_for_a_best_value_near_the_lower_end_in_log_space():
    space = {"learning_rate": log_uniform(1e-4, 1.0)}
    # 2e-4 is 7.5% of the way in log space: inside the outer 10%.
    with pytest.warns(SearchBorderWarning, match=r"learning_rate=.* lowest 10% .*log scale"):
        result = random_search(_distance_to(2e-4), space, 64, key=0)
    assert result.at_border == ("learning_rate",)


def test_no_border_warning_for_an_interior_best_value_in_log_space():
    # 1e-3 is 0.1% of the way in linear space but 25% in log space: not at the border.
    with _quiet():
        result = random_search(_distance_to(1e-3), {"learning_rate": log_uniform(1e-4, 1.0)}, 64, 0)
    assert result.at_border == ()
    assert 5e-4 < result.best.hyperparams["learning_rate"] < 2e-3


def test_border_warning_for_uniform_integer_high_end_and_never_for_choice():
    space = {"m": uniform(0.0, 1.0), "k": integer(0, 20), "c": choice([0, 1, 2])}
    # m counts most; k (best inside its range) and c (an option) break near-ties.
    objective = lambda h: abs(h["m"] - 0.99) + 0.002 * abs(h["k"] - 10) + 0.001 * h["c"]  # noqa: E731
    with pytest.warns(SearchBorderWarning, match=r"best m=.* highest 10%") as caught:
        result = random_search(objective, space, 200, key=1)
    assert result.at_border == ("m",)
    assert 2 <= result.best.hyperparams["k"] <= 18 and result.best.hyperparams["c"] == 0
    assert len([w for w in caught if issubclass(w.category, SearchBorderWarning)]) == 1
    with _quiet():  # border_fraction=0 turns the check off
        assert random_search(objective, space, 200, 1, border_fraction=0.0).at_border == ()


def test_maximize_looks_at_the_border_of_the_highest_value():
    with pytest.warns(SearchBorderWarning, match="highest"):
        result = random_search(lambda h: h["x"], {"x": uniform(-1.0, 1.0)}, 50, 0, maximize=True)
    assert result.best.value == max(t.value for t in result.trials)


# ---------------------------------------------------------------- refine


def test_refine_narrows_around_the_best_trials():
    space = {
        "learning_rate": log_uniform(1e-5, 1.0),
        "momentum": uniform(0.0, 0.99),
        "layers": integer(1, 40),
        "optimizer": choice(["adam", "sgd", "rmsprop", "adagrad"]),
    }

    def objective(h):
        return (
            (math.log10(h["learning_rate"]) + 2.5) ** 2
            + 10 * (h["momentum"] - 0.6) ** 2
            + 0.01 * (h["layers"] - 20) ** 2
            + {"adam": 0.0, "sgd": 3.0, "rmsprop": 0.5, "adagrad": 5.0}[h["optimizer"]]
        )

    with _quiet():
        coarse = random_search(objective, space, 60, key=2)
        fine = refine(space, coarse, top_k=4, margin=0.1)
        top = sorted(coarse.trials, key=lambda t: t.value)[:4]
        # Each numeric range: the hull of the 4 best, padded by 10% of the old width.
        lrs = [math.log(t.hyperparams["learning_rate"]) for t in top]
        pad = 0.1 * math.log(1.0 / 1e-5)
        assert math.isclose(fine["learning_rate"].low, max(1e-5, math.exp(min(lrs) - pad)))
        assert math.isclose(fine["learning_rate"].high, min(1.0, math.exp(max(lrs) + pad)))
        moms = [t.hyperparams["momentum"] for t in top]
        assert math.isclose(fine["momentum"].low, max(0.0, min(moms) - 0.099))
        assert math.isclose(fine["momentum"].high, min(0.99, max(moms) + 0.099))
        layers = [t.hyperparams["layers"] for t in top]
        assert (fine["layers"].low, fine["layers"].high) == (min(layers) - 4, max(layers) + 4)
        assert set(fine["optimizer"].options) == {t.hyperparams["optimizer"] for t in top}
        # Narrower, and the second stage finds a better setting than the first.
        assert fine["learning_rate"].high / fine["learning_rate"].low < 1e5
        assert fine["momentum"].high - fine["momentum"].low < 0.99
        second = random_search(objective, fine, 60, key=3)
    assert second.best.value < coarse.best.value


def test_refine_stays_inside_the_old_range_and_skips_nan_trials():
    space = {"x": uniform(0.0, 1.0)}
    result = SearchResult(
        trials=(
            Trial({"x": 0.02}, 1.0),
            Trial({"x": 0.5}, math.nan),
            Trial({"x": 0.9}, 3.0),
        ),
        best=Trial({"x": 0.02}, 1.0),
        at_border=("x",),
        maximize=False,
    )
    fine = refine(space, result, top_k=2, margin=0.05)
    assert (fine["x"].low, fine["x"].high) == (0.0, 0.9 + 0.05)
    assert refine(space, result, top_k=1, margin=0.05)["x"].high == pytest.approx(0.07)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: uniform(1.0, 1.0), r"uniform: high must be > low, got low=1.0, high=1.0"),
        (lambda: uniform(0.0, math.inf), "uniform: high must be finite"),
        (lambda: log_uniform(0.0, 1.0), "log_uniform: low must be a finite number > 0, got 0.0"),
        (lambda: log_uniform(1.0, 0.5), "log_uniform: high must be > low"),
        (lambda: integer(1.5, 3), "integer: low must be an integer, got 1.5"),
        (lambda: integer(3, 1), "integer: high must be >= low"),
        (lambda: choice([]), "choice: options must be a non-empty sequence"),
        (lambda: choice("ab"), "choice: options must be a non-empty sequence"),
        (lambda: random_search(abs, {"x": uniform(0, 1)}, 0, 0), "num_trials must be an integer"),
        (lambda: random_search(abs, {}, 3, 0), "non-empty dict"),
        (lambda: random_search(abs, {"x": (0, 1)}, 3, 0), "'x' must be a dimension"),
        (
            lambda: random_search(abs, {"x": uniform(0, 1)}, 3, 0, border_fraction=0.5),
            r"border_fraction must be in \[0, 0.5\), got 0.5",
        ),
        (
            lambda: random_search(abs, {"x": uniform(0, 1)}, 3, 0, batched=True, batch_size=0),
            "batch_size must be an integer >= 1",
        ),
    ],
)
def test_bad_arguments_fail_with_a_message(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


def test_batched_search_refuses_text_options_and_non_scalar_objectives():
    space = {"opt": choice(["adam", "sgd"])}
    with pytest.raises(ValueError, match="batched=True needs numeric options"):
        random_search(lambda h: 0.0, space, 2, 0, batched=True)
    with pytest.raises(ValueError, match="one scalar per trial"):
        random_search(lambda h: jnp.ones(3) * h["x"], {"x": uniform(0, 1)}, 2, 0, batched=True)


def test_refine_validates_its_arguments():
    space = {"x": uniform(0.0, 1.0)}
    result = random_search(lambda h: (h["x"] - 0.5) ** 2, space, 8, 0)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        refine(space, result, top_k=0)
    with pytest.raises(ValueError, match="margin must be a finite number > 0"):
        refine(space, result, margin=0.0)
    with pytest.raises(ValueError, match=r"the space has \['y'\], but the trials have \['x'\]"):
        refine({"y": uniform(0.0, 1.0)}, result)
