"""Robust aggregates over seeds (Agarwal et al., 2021, "Deep RL at the edge of the statistical
precipice"), through ``rliable``: the interquartile mean (IQM) with stratified bootstrap 95%
intervals, the probability of improvement between two configurations, performance profiles and
IQM learning curves with bootstrap bands.

Scores are arrays ``[runs, tasks]`` (a study's tasks are its env presets); curves are
``[runs, tasks, points]``. ``rliable`` is imported on first use (the ``plot`` extra).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Mapping, Sequence

import numpy as np

REPS = 2000          # bootstrap resamples: a 95% interval's ends move by well under 1% between seeds at this count
CONFIDENCE = 0.95


@contextlib.contextmanager
def _seeded(seed: int):
    """Makes one bootstrap reproducible; yields the ``random_state`` to hand to rliable.

    rliable's stratified bootstrap (0.x) takes a ``random_state`` but draws its resamples with
    ``np.random.choice``, i.e. from numpy's global generator, so the RandomState alone leaves the
    intervals different from one process to the next. The global generator is therefore seeded for
    the call and restored after it (the caller's random stream is left as it was); the RandomState
    is passed as well, for the parts that do use it. arch deprecates ``random_state`` with a
    FutureWarning, harmless here, so that warning is silenced around the call."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(saved)


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError as err:  # the plot extra is not installed
        raise ImportError(f"study reports need rliable ({err}); install it with: pip install 'lightning_marl[plot]'") \
            from None
    return library, metrics


def _per_configuration(data: Mapping[str, np.ndarray], estimate, seed: int):
    """``estimate({key: value}, random_state) -> ({key: point}, {key: band})`` for each configuration
    on its own, each under the same seeded bootstrap: rliable draws every configuration's resamples
    from one stream, so a configuration's interval would depend on which other configurations share
    the report (the same runs got slightly different intervals in two studies)."""
    points, bands = {}, {}
    for key, value in data.items():
        with _seeded(seed) as random_state:
            point, band = estimate({key: value}, random_state)
        points[key], bands[key] = point[key], band[key]
    return points, bands


def _intervals(library, data: Mapping[str, np.ndarray], statistic, seed: int, reps: int):
    """rliable's interval estimates of ``statistic``, per configuration (:func:`_per_configuration`)."""
    return _per_configuration(data, lambda one, random_state: library.get_interval_estimates(
        one, statistic, reps=reps, confidence_interval_size=CONFIDENCE, random_state=random_state), seed)


def iqm_with_interval(score_dict: Mapping[str, np.ndarray], seed: int = 0,
                      reps: int = REPS) -> dict[str, tuple[float, float, float]]:
    """Per configuration: (IQM, low, high) with a stratified bootstrap 95% interval (runs resampled
    within each task); a configuration's interval depends on its own scores alone."""
    library, metrics = _rliable()
    scores = {k: np.asarray(v, dtype=float) for k, v in score_dict.items()}
    point, interval = _intervals(library, scores, lambda x: np.array([metrics.aggregate_iqm(x)]), seed, reps)
    return {k: (float(point[k][0]), float(interval[k][0, 0]), float(interval[k][1, 0])) for k in scores}


def probability_of_improvement(x: np.ndarray, y: np.ndarray, seed: int = 0,
                               reps: int = REPS) -> tuple[float, float, float]:
    """P(X > Y) (ties count half; averaged over tasks) with a stratified bootstrap 95% interval."""
    library, metrics = _rliable()
    pair = {"x,y": (np.asarray(x, dtype=float), np.asarray(y, dtype=float))}
    with _seeded(seed) as random_state:
        point, interval = library.get_interval_estimates(
            pair, metrics.probability_of_improvement, reps=reps, confidence_interval_size=CONFIDENCE,
            random_state=random_state)
    return tuple(float(np.ravel(value)[0]) for value in (point["x,y"], interval["x,y"][0], interval["x,y"][1]))


def performance_profile(score_dict: Mapping[str, np.ndarray], taus: Sequence[float], seed: int = 0,
                        reps: int = REPS) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per configuration: the fraction of runs with a score above each tau, with 95% bands (a
    configuration's bands depend on its own scores alone)."""
    library, _ = _rliable()
    scores = {k: np.asarray(v, dtype=float) for k, v in score_dict.items()}
    return _per_configuration(scores, lambda one, _: library.create_performance_profile(
        one, np.asarray(taus, dtype=float), reps=reps, confidence_interval_size=CONFIDENCE), seed)


def iqm_curves(curves: Mapping[str, np.ndarray], seed: int = 0,
               reps: int = REPS) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per configuration with curves ``[runs, tasks, points]``: (IQM, low, high) at each point."""
    library, metrics = _rliable()
    data = {k: np.asarray(v, dtype=float) for k, v in curves.items()}

    def per_point(x: np.ndarray) -> np.ndarray:  # x: [runs, tasks, points]
        return np.array([metrics.aggregate_iqm(x[..., t]) for t in range(x.shape[-1])])

    point, interval = _intervals(library, data, per_point, seed, reps)
    return {k: (point[k], interval[k][0], interval[k][1]) for k in data}


def area_under_curve(steps: np.ndarray, values: np.ndarray) -> float:
    """The mean of a learning curve over env steps (trapezoid area / step range): a curve that is
    high early scores higher than one that gets there late."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if len(steps) < 2:
        return float(values[-1])
    area = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(steps)))
    return area / float(steps[-1] - steps[0])


def settled_at(steps: np.ndarray, values: np.ndarray, tolerance: float) -> float:
    """Stability of one learning curve: the first env step from which every later evaluation stays
    within ``tolerance`` of the final score (the curve's first step if it never leaves that band). A
    run that oscillates until late, or falls back late, settles late."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    outside = np.flatnonzero(np.abs(values - values[-1]) > tolerance)
    return float(steps[0] if outside.size == 0 else steps[outside[-1] + 1])


def fell_back(values: np.ndarray, tolerance: float) -> bool:
    """Whether a run ends more than ``tolerance`` below the best score it reached."""
    values = np.asarray(values, dtype=float)
    return bool(values.max() - values[-1] > tolerance)


HORIZON_SLACK = 0.02  # an evaluation waits for its round to end: a few env steps past the interval's multiple


def common_horizon(last_steps: Sequence[float], slack: float = HORIZON_SLACK) -> float:
    """The env step up to which every run of a table can be compared: the earliest last evaluation
    among them, plus ``slack`` of it. Runs of one budget end together; a peer's loop may stop
    short of the budget (EPyMARL tests last at ~450k of a 500k budget with a 50k interval), and a
    score taken later on one side than on the other is not the same measurement."""
    return float(min(last_steps)) * (1.0 + slack)


def up_to(steps: np.ndarray, values: np.ndarray, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """The evaluations of a curve at or before ``horizon`` (at least its first one)."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    keep = (steps <= horizon) | (np.arange(len(steps)) == 0)
    return steps[keep], values[keep]
