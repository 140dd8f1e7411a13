"""A statsforecast model as the base the network departs from, in place of the AR base (base.ARBase).

With `base="statsforecast"` each series' base combines MSTL, AutoETS, AutoARIMA and SeasonalNaive lead by lead,
with weights inversely proportional to each model's mean squared error at that lead on the validation inits (the
last third of the training period; the models fitted on what lies before them): Bates & Granger's (1969)
inverse-MSE combination. A model with under MIN_WEIGHT at every lead is dropped (and not run). One pick per series
was brittle where the validation period holds few inits: the seasonal naive won solar power's validation over all
leads and lost its first hour to MSTL, and won wine sales' validation and lost its test year. `base="mstl"` (or
another of peers.PEERS) fixes one model.
The network then generates the departures of the future from that forecast, divided by the base's RMS error per
lead and series over the training windows (what ARBase.scale is for the AR base), so that its capacity goes to the
error distribution, its spread and its dependence across leads and series, not to the level and the seasons.

The statsforecast models run on the normalised values with the hourly climatology put back (the series as the
codec scales it, daily cycle included), and their forecasts are taken back to the anomalies the network sees. They
are fitted once (on the network's part of the training period for training; at forecast time on all the data
before the first init) and applied from each init with the whole history before it (statsforecast's `forward`,
peers.forecast_series); nothing of them is stored but the models and weights per series: a run reloads and
refits them, which for a table of a few series takes seconds.

The base forecasts a single horizon: a run with a statsforecast base forecasts at most its horizon (no rollout)."""
from __future__ import annotations

import numpy as np

from gendiff.errors import ConfigError, DataError

from . import peers
from .base import ARBase
from .frequency import candidate_seasons
from .timeaxis import lead_times, time_step
from .windows import horizon_values

CHOOSE = "statsforecast"  # the base value that picks a model per series on the validation inits
SYSTEMS = ("mstl", "auto_ets", "auto_arima", "seasonal_naive")
NO_SEASON = ("auto_ets", "auto_arima", "naive")  # the candidates of a series without a season
BASES = (CHOOSE, *SYSTEMS, "naive")
VALIDATION_INITS = 48
# AutoARIMA's seasonal search grows with the season: above 12 steps (weekly CO2's 52) one fit took over ten minutes
# on this machine, so CHOOSE leaves it out there (base='auto_arima' still asks for it)
ARIMA_MAX_SEASON = 12
# the base's forecast from every training window's init is one statsforecast `forward` each: MSTL(48, 336) took
# 0.6 s a window on half-hourly demand (2,800 windows: half an hour), so the network trains on at most this many
# windows, evenly spaced (neighbouring windows share all but one step)
MAX_WINDOWS = 1024
MIN_WEIGHT = 0.05  # a model under this combination weight at every lead of a series is not run for it


def is_peer(base) -> bool:
    """Whether a run's `base` names a statsforecast base (CHOOSE or one model)."""
    return isinstance(base, str) and base in BASES


def check_base(base) -> None:
    if base not in (None, "linear") and not is_peer(base):
        raise ConfigError(f"base={base!r}: expected 'linear', None, {CHOOSE!r} (a statsforecast model chosen per "
                          f"series on the validation period) or one of {', '.join(BASES[1:])}")


def candidates(base: str, seasons) -> tuple[str, ...]:
    """The models `base` chooses among, for seasons (in steps): MSTL and the seasonal naive need a season;
    AutoARIMA only up to seasons of ARIMA_MAX_SEASON steps."""
    seasonal = any(int(s) > 1 for s in seasons or ())
    if base != CHOOSE:
        if base in ("mstl", "seasonal_naive") and not seasonal:
            raise ConfigError(f"base={base!r} needs a season (seasons=...); the data gave none")
        return (base,)
    if not seasonal:
        return NO_SEASON
    if max(int(s) for s in seasons) > ARIMA_MAX_SEASON:
        return tuple(s for s in SYSTEMS if s != "auto_arima")
    return SYSTEMS


class PeerBase:
    """The statsforecast models of each feature and their weights per lead: `weights` (S, H, C) over the model names
    `names` (each lead's weights of a feature sum to 1), and the season lengths in steps. PeerBase(systems, seasons)
    gives each feature the one model of `systems` (one name per feature)."""

    def __init__(self, systems, seasons, weights=None, names=None):
        self.seasons = [int(s) for s in seasons or ()] or [1]
        if weights is None:
            systems = [str(s) for s in systems]
            self.names = list(dict.fromkeys(systems))
            self.weights = np.array([[[float(s == n) for s in systems]] for n in self.names])  # (S, 1, C)
        else:
            self.names = [str(s) for s in names]
            self.weights = np.asarray(weights, dtype=np.float64)
            if self.weights.ndim != 3 or self.weights.shape[0] != len(self.names):
                raise DataError(f"peer_base weights of shape {self.weights.shape} for models {self.names}: expected "
                                f"(models, leads, series)")
        self._cache: dict = {}

    @property
    def systems(self) -> list[str]:
        """Per feature the model of largest mean weight (the one model of a fixed base)."""
        return [self.names[int(k)] for k in self.weights.mean(1).argmax(0)]

    def lead_weights(self, horizon: int) -> np.ndarray:
        """(S, horizon, C) weights; leads past the last weighted one take its weights."""
        w = self.weights
        idx = np.minimum(np.arange(int(horizon)), w.shape[1] - 1)
        return w[:, idx]

    def to_config(self) -> dict:
        cfg = {"systems": self.systems, "seasons": self.seasons}
        if self.weights.shape[1] > 1 or not np.isin(self.weights, (0.0, 1.0)).all():
            cfg["combination"] = {"models": self.names, "weights": np.round(self.weights, 5).tolist()}
        return cfg

    @classmethod
    def from_config(cls, cfg: dict) -> PeerBase:
        try:
            combo = cfg.get("combination")
            if combo is not None:
                return cls(None, cfg["seasons"], combo["weights"], combo["models"])
            return cls(cfg["systems"], cfg["seasons"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"config.json: peer_base entry {exc} missing; retrain the run") from None

    def model(self, system: str):
        seasons = [s for s in self.seasons if s > 1] or [1]
        return peers.make_model(system, seasons)

    def forecasts(self, values, times, climatology, init_idx, horizon: int, fit_idx=None, systems=None,
                  label: str = "data") -> np.ndarray:
        """(I, horizon, C) base forecasts in anomalies (what the network sees) from each init index, each model
        fitted on `fit_idx` (default: every step before the first init) and applied from each init with the whole
        history before it. `systems`: models per feature in place of the chosen ones (validation)."""
        init_idx = np.asarray(init_idx, dtype=np.int64)
        one = self if systems is None else PeerBase(systems, self.seasons)
        names, weights = one.names, one.lead_weights(horizon)
        if fit_idx is None:
            fit_idx = np.arange(0, int(init_idx.min()) + 1)
        end = int(max(init_idx.max(), np.max(fit_idx))) + 1
        key = (id(values), len(values), end, init_idx.tobytes(), int(horizon), np.asarray(fit_idx).tobytes(),
               tuple(names), weights.tobytes())
        if key in self._cache:
            return self._cache[key]
        z = np.asarray(values[0:end], dtype=np.float32)
        u = climatology.restore(z, times[:end]).astype(np.float64)  # normalised, daily cycle back in
        out = np.full((len(init_idx), int(horizon), z.shape[1]), np.nan, dtype=np.float64)
        for c in range(z.shape[1]):
            if not np.isfinite(u[fit_idx, c]).any():
                continue
            total = np.zeros((len(init_idx), int(horizon)))
            for s, system in enumerate(names):
                if weights[s, :, c].max() > 0:
                    fc, _ = peers.forecast_series(self.model(system), u[:, c], np.asarray(fit_idx), init_idx,
                                                  int(horizon), label=f"{label}, feature {c}")
                    total += weights[s, :, c] * fc
            out[:, :, c] = total
        step_times = lead_times(np.asarray(times)[init_idx], int(horizon), time_step(times))
        anomalies = climatology.remove(out.astype(np.float32), step_times)
        self._cache = {key: anomalies}  # the latest only: forecast, calibration and scoring ask for it in turn
        return anomalies

    def error_scale(self, values, times, climatology, starts, context: int, horizon: int, fit_idx) -> np.ndarray:
        """(H, C) RMS error of the base per lead and feature over the training windows (`starts`), in anomalies;
        with the windows' base forecasts (n, H, C)."""
        inits = np.asarray(starts) + context - 1
        base = self.forecasts(values, times, climatology, inits, horizon, fit_idx=fit_idx, label="training windows")
        err = horizon_values(values, inits, horizon).astype(np.float32) - base
        n = np.isfinite(err).sum(0)
        rms = np.sqrt(np.nansum(err ** 2, 0) / np.maximum(n, 1))
        fallback = np.nanmedian(np.where(n > 0, rms, np.nan)) if (n > 0).any() else 1.0
        rms = np.where((n > 0) & (rms > 0), rms, fallback if np.isfinite(fallback) and fallback > 0 else 1.0)
        return rms.astype(np.float32), base.astype(np.float32)


def validation_inits(idx: np.ndarray, idx_hold: np.ndarray, horizon: int, n: int = VALIDATION_INITS) -> np.ndarray:
    """Up to `n` evenly spaced inits whose horizon lies in the validation part: the last third of the training
    period, or the calibration hold-out where that is longer (a short hold-out, a dozen inits of monthly data,
    picked the seasonal naive over MSTL on wine sales by chance)."""
    part = idx[len(idx) - max(horizon + 1, len(idx) // 3, len(idx_hold)):]
    first, last = int(part[0]), int(part[-1]) - horizon
    if last < first:
        raise DataError(f"the validation part of the training period ({len(part)} steps) is shorter than the "
                        f"{horizon}-step horizon the statsforecast base is chosen on")
    return np.unique(np.linspace(first, last, min(n, last - first + 1)).round().astype(np.int64))


def choose(base: str, values, times, climatology, idx: np.ndarray, idx_hold: np.ndarray, seasons, horizon: int,
           label: str = "data") -> tuple[PeerBase, dict]:
    """The PeerBase of `base` (CHOOSE: per feature and lead the inverse-MSE combination of the candidates, see
    combine) and the validation MAE of each candidate and of the combination per feature ({system: [C floats]}),
    in anomalies."""
    options = candidates(base, seasons)
    n_feat = values.shape[1]
    if len(options) == 1:
        return PeerBase([options[0]] * n_feat, seasons), {}
    inits = validation_inits(idx, idx_hold, horizon)
    fit_idx = np.arange(int(idx[0]), int(inits[0]) + 1)
    probe = PeerBase([options[0]] * n_feat, seasons)
    truth = horizon_values(values, inits, horizon).astype(np.float32)
    errors = np.stack([truth - probe.forecasts(values, times, climatology, inits, horizon, fit_idx=fit_idx,
                                               systems=[system] * n_feat, label=f"{label} (validation of {system})")
                       for system in options])  # (S, I, H, C)
    weights = combine(errors)
    mae = {s: _mae(errors[k]) for k, s in enumerate(options)}
    mae["combination"] = _mae(np.einsum("sihc,shc->ihc", errors, weights))  # in-sample of its weights
    keep = weights.max((1, 2)) > 0
    chosen = PeerBase(None, seasons, weights[keep], [s for s, k in zip(options, keep, strict=True) if k])
    return chosen, {s: np.round(v, 5).tolist() for s, v in mae.items()}


def combine(errors: np.ndarray, min_weight: float = MIN_WEIGHT) -> np.ndarray:
    """(S, H, C) weights from (S, I, H, C) validation errors: per lead and feature inversely proportional to each
    model's mean squared error (a model with no finite error: weight 0); a model under `min_weight` at every lead of
    a feature is dropped there and the rest renormalised."""
    err = np.asarray(errors, dtype=np.float64)
    n = np.isfinite(err).sum(1)
    mse = np.where(n > 0, np.nansum(np.where(np.isfinite(err), err ** 2, 0.0), 1) / np.maximum(n, 1), np.inf)
    scale = np.nanmax(np.where(np.isfinite(mse), mse, np.nan))
    floor = 1e-12 * (scale if np.isfinite(scale) and scale > 0 else 1.0)  # an exact model takes it all
    inv = np.where(np.isfinite(mse), 1.0 / np.maximum(mse, floor), 0.0)
    w = inv / np.maximum(inv.sum(0, keepdims=True), 1e-300)
    w = np.where((w.max(1, keepdims=True) >= min_weight), w, 0.0)
    total = w.sum(0, keepdims=True)
    even = np.full_like(w, 1.0 / w.shape[0])
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), even)


def _mae(err: np.ndarray) -> np.ndarray:
    """(C,) mean absolute error over inits and leads per feature; inf where none is finite."""
    finite = np.isfinite(err)
    return np.where(finite.any((0, 1)), np.nanmean(np.where(finite, np.abs(err), np.nan), (0, 1)), np.inf)


def peer_seasons(seasons, step, n_fit: int) -> list[int]:
    """The statsforecast models' seasons: the AR base's (the ACF rule's), and the frequency's day, week and year
    (frequency.candidate_seasons) that the fitting period holds at least twice. The AR leaves the daily cycle to the
    hourly climatology; the models run on the series with that cycle put back, so they need it as a season (on
    half-hourly solar power, no season made the choice AutoARIMA, which lost to MSTL(48) past an hour)."""
    out = [int(s) for s in seasons or ()]
    out += [s for s in candidate_seasons(step) if 2 * s <= n_fit and s not in out]
    return sorted(out)


def fit(base: str, prep) -> tuple:
    """(zero AR holding the scale, PeerBase, the training windows' base forecasts (n, H, C), validation MAE, the
    training windows' starts: at most MAX_WINDOWS of prep.starts, evenly spaced) for a
    prepare.Prepared: the models chosen on the validation inits, then fitted on the network's part of the training
    period and applied from every training window's init. The AR base of the run has no lags that count (phi 0):
    it carries the base's error scale per lead into the machinery the AR base uses (window_scale, level)."""
    seasons = peer_seasons(prep.seasons, prep.step, len(prep.idx_net))
    peer, validation = choose(base, prep.values, prep.times, prep.climatology, prep.idx, prep.idx_hold,
                              seasons, prep.horizon, prep.label)
    starts = training_starts(prep.starts)
    scale, offsets = peer.error_scale(prep.values, prep.times, prep.climatology, starts, prep.context,
                                      prep.horizon, prep.idx_net)
    zero = ARBase(np.zeros((prep.values.shape[1], 1), np.float32), scale)
    return zero, peer, offsets, validation, starts


def training_starts(starts: np.ndarray, limit: int = MAX_WINDOWS) -> np.ndarray:
    """At most `limit` of the training windows, evenly spaced (all of them below it)."""
    starts = np.asarray(starts)
    if len(starts) <= limit:
        return starts
    return starts[np.unique(np.linspace(0, len(starts) - 1, limit).round().astype(np.int64))]
