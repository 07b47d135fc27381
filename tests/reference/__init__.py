"""Independent float64 numpy references for gradtx's methods.

One module per algorithm family, each a plain loop over steps (and over leaves)
that follows the published pseudo-code line by line, with its symbol names:

==============  =====================================================================
module          algorithms
==============  =====================================================================
``sgd``         Goodfellow, Bengio & Courville (2016) Alg. 8.1 (SGD), 8.2 (momentum,
                both placements of the rate), 8.3 (Nesterov: literal and
                reparametrised)
``adagrad``     Alg. 8.4 (delta outside the root, as the book; or inside, as Optax)
``rmsprop``     Alg. 8.5 (delta inside as the book, or outside as PyTorch), centered
                (Graves 2013), heavy-ball momentum, Alg. 8.6 (Nesterov, literal)
``adadelta``    Zeiler (2012) Alg. 1
``adam``        Alg. 8.7 / Kingma & Ba (2015) Alg. 1, their eps-hat form, and
                AdamW (Loshchilov & Hutter 2019, Alg. 2)
``amsgrad``     Reddi, Kale & Kumar (2018) Alg. 2, and the bias-corrected forms of
                Optax (max after correction) and PyTorch (max of the raw moment)
``adamax``      Kingma & Ba (2015) Alg. 2; with decoupled decay, AdaMaxW
``nadam``       Dozat (2016) Alg. 2, with the warming momentum schedule or a constant;
                with decoupled decay, NAdamW
``adabelief``   Zhuang et al. (2020) Alg. 2
``yogi``        Zaheer et al. (2018) Alg. 2, as printed or with Optax's start and
                bias correction
``lion``        Chen et al. (2023) Alg. 2
``sign``        Bernstein et al. (2018) Alg. 1 (signSGD) and Alg. 3 (Signum)
``optimistic``  optimistic gradient descent (Daskalakis et al. 2018; Mokhtari et al.
                2020) and Optimistic Adam (Daskalakis et al. 2018, Alg. 1)
``second_order`` damped Newton (Goodfellow et al. Alg. 8.8, eq. 8.28; Nocedal & Wright
                Alg. 3.3), truncated Newton-CG (N&W Alg. 7.1), nonlinear CG (FR,
                PR+), BFGS (N&W eq. 6.17, 6.20), L-BFGS (N&W Alg. 7.4), and the
                Armijo / strong Wolfe checkers
``trust_ratio`` LARS (You, Gitman & Ginsburg 2017, Alg. 1: the paper's denominator or
                Optax's), LAMB (You et al. 2020, Alg. 2)
``fromage``     Bernstein et al. (2020) Alg. 1
``novograd``    Ginsburg et al. (2019) Alg. 1
``adan``        Xie et al. (2022) Alg. 1, bias-corrected as the authors' code
``sm3``         Anil et al. (2019) Alg. 2 (SM3-II), with momentum and averaging
``adafactor``   Shazeer & Stern (2018) Alg. 4 and 5, clipping and relative step size
``polyak``      Loizou et al. (2021) eq. 5 (SPS_max), and SPS+
``dog``         Ivgi, Hinder & Carmon (2023) Alg. 1, layer-wise (LDoG)
``madgrad``     Defazio & Jelassi (2021) Alg. 1, and the implementations' lambda_k
``acprop``      Zhuang et al. (2021) Alg. 2, with Optax's first step and bias correction
``sam``         Foret et al. (2021) Alg. 1, with k - 1 ascent steps per period (both
                modes of Optax's ``sam``) and a heavy-ball outer step
``sophia``      Liu et al. (2023) Alg. 3, with or without Optax's bias correction and
                Hessian-after-the-step order
``galore``      Zhao et al. (2024) Alg. 2 (GaLore-Adam), left, right or two-sided
                projection, by shape as Optax or as the paper
==============  =====================================================================

Every reference takes the initial parameters as a list of arrays (the leaves of
a pytree, in any order the caller likes) and the gradients as a sequence of
such lists, or as a function of the point (see ``_common.Gradients``), and
returns the trajectory: one float64 array per leaf, row ``t`` the parameters
after ``t`` steps. Learning rates may be numbers or functions of the 0-based
step ``k``.

These modules import numpy only: nothing from gradtx or Optax, so that a bug in
gradtx cannot be copied into the oracle that checks it (a test checks this).
``report_deviations`` is the one module here that drives gradtx, to print how
far gradtx strays from each reference.
"""

from . import (
    acprop,
    adabelief,
    adadelta,
    adafactor,
    adagrad,
    adam,
    adamax,
    adan,
    amsgrad,
    dog,
    fromage,
    galore,
    lion,
    madgrad,
    nadam,
    novograd,
    optimistic,
    polyak,
    rmsprop,
    sam,
    second_order,
    sgd,
    sign,
    sm3,
    sophia,
    trust_ratio,
    yogi,
)

__all__ = [
    "adabelief",
    "dog",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adan",
    "amsgrad",
    "lion",
    "nadam",
    "optimistic",
    "rmsprop",
    "second_order",
    "sgd",
    "sign",
    "yogi",
    "fromage",
    "novograd",
    "polyak",
    "sm3",
    "trust_ratio",
    "madgrad",
    "acprop",
    "sam",
    "sophia",
    "galore",
]
