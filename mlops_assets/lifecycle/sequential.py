"""Always-valid sequential test on paired shadow/champion outcomes (mixture SPRT).

A fixed-sample test (exact McNemar/binomial) checked at every tick gets many chances to cross
its threshold by luck, so its false-promotion rate grows with the number of looks. The mixture
likelihood ratio below is a non-negative martingale under H0 (each discordant pair is a win with
p = 0.5), so by Ville's inequality P(sup_n LR_n >= 1/alpha) <= alpha: its p-value
min(1, 1/max LR) stays valid however often it is looked at.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from pydantic import BaseModel
from scipy.special import betaln


class Direction(StrEnum):
    """Which way decisive evidence points."""

    PROMOTE = "promote"
    REJECT = "reject"
    NONE = "none"


class SequentialResult(BaseModel):
    """The state of the sequential test at one look."""

    pairs: int
    wins: int
    losses: int
    log_lr: float
    max_log_lr: float
    p_value: float
    direction: Direction


def log_mixture_lr(wins: np.ndarray | int, losses: np.ndarray | int, a: float = 1.0) -> np.ndarray:
    """Log of the Beta(a, a) mixture likelihood ratio against p = 0.5 on discordant pairs."""
    w = np.asarray(wins, dtype=float)
    lo = np.asarray(losses, dtype=float)
    return betaln(w + a, lo + a) - betaln(a, a) + (w + lo) * np.log(2.0)


def sequential_look(
    pairs: int,
    wins: int,
    losses: int,
    *,
    alpha: float,
    prior_max_log_lr: float = 0.0,
    a: float = 1.0,
) -> SequentialResult:
    """One look: update the running max of the log LR and say whether it is decisive."""
    log_lr = float(log_mixture_lr(wins, losses, a))
    max_log_lr = max(prior_max_log_lr, log_lr)
    p_value = float(min(1.0, np.exp(-max_log_lr)))
    direction = Direction.NONE
    if p_value <= alpha and wins != losses:
        direction = Direction.PROMOTE if wins > losses else Direction.REJECT
    return SequentialResult(
        pairs=pairs,
        wins=wins,
        losses=losses,
        log_lr=log_lr,
        max_log_lr=max_log_lr,
        p_value=p_value,
        direction=direction,
    )
