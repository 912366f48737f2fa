"""Means with 95% confidence intervals (Student t), for evaluation and plots."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as _st


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the ``confidence`` interval of the mean); half-width 0 for one value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), 0.0
    sem = x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(sem * _st.t.ppf(0.5 + confidence / 2, x.size - 1))
