import numpy as np
from scipy.stats import binom

from mlops_assets.lifecycle.sequential import Direction, log_mixture_lr, sequential_look

ALPHA = 0.05


def _paths(p_win: float, sims: int = 4000, n: int = 1000, seed: int = 7):
    rng = np.random.default_rng(seed)
    w = np.cumsum(rng.random((sims, n)) < p_win, axis=1)
    looks = np.arange(10, n + 1, 10)
    wins = w[:, looks - 1]
    return wins, looks - wins, looks


def test_sequential_false_promotion_stays_below_alpha_and_naive_exceeds():
    wins, losses, looks = _paths(0.5)
    sims = wins.shape[0]
    promote = ((log_mixture_lr(wins, losses) >= np.log(1 / ALPHA)) & (wins > losses)).any(axis=1)
    assert promote.mean() <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / sims)
    # one-sided exact binomial at each look, vectorised
    naive_p = binom.sf(wins - 1, looks, 0.5)
    naive = (naive_p <= ALPHA / 2).any(axis=1)
    assert naive.mean() > ALPHA


def test_sequential_stops_early_under_real_improvement():
    wins, losses, looks = _paths(0.65, sims=500)
    decisive = log_mixture_lr(wins, losses) >= np.log(1 / ALPHA)
    assert decisive.any(axis=1).mean() > 0.95
    first = looks[decisive.argmax(axis=1)]
    assert first.mean() < 1000
    assert (wins[decisive] > losses[decisive]).mean() > 0.99


def test_look_direction():
    assert sequential_look(100, 80, 20, alpha=ALPHA).direction is Direction.PROMOTE
    assert sequential_look(100, 20, 80, alpha=ALPHA).direction is Direction.REJECT
    assert sequential_look(10, 5, 5, alpha=ALPHA).direction is Direction.NONE
