"""Weather skill scores against brute-force oracles and properscoring."""
import itertools

import numpy as np
import pytest
import xarray as xr

from gendiff.domains.weather import metrics as M

properscoring = pytest.importorskip("properscoring")


def _random(seed=0, members=9, shape=(4, 5, 6)):
    rng = np.random.default_rng(seed)
    dims = ("lead_time", "latitude", "longitude")
    coords = {"lead_time": np.arange(shape[0]), "latitude": np.linspace(60, 40, shape[1]),
              "longitude": np.arange(shape[2])}
    f = xr.DataArray(rng.normal(size=(members, *shape)), dims=("member", *dims), coords=coords)
    y = xr.DataArray(rng.normal(size=shape) * 1.3 + 0.2, dims=dims, coords=coords)
    return f, y


def test_crps_matches_properscoring():
    f, y = _random(members=16)
    ours = M.crps_ensemble(f, y, "member", fair=False).transpose(*y.dims).values
    ref = properscoring.crps_ensemble(y.values, np.moveaxis(f.values, 0, -1))
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_crps_fair_brute_force():
    f, y = _random(members=5, shape=(3, 2, 2))
    x, yv = np.moveaxis(f.values, 0, -1), y.values
    brute = np.empty_like(yv)
    for idx in np.ndindex(yv.shape):
        m = x[idx]
        pair = sum(abs(a - b) for a, b in itertools.product(m, m))
        brute[idx] = np.mean(abs(m - yv[idx])) - pair / (2 * len(m) * (len(m) - 1))
    np.testing.assert_allclose(M.crps_ensemble(f, y, fair=True).transpose(*y.dims).values, brute, atol=1e-12)


def test_single_member_crps_is_absolute_error():
    f, y = _random(members=1)
    for fair in (True, False):
        np.testing.assert_allclose(M.crps_ensemble(f, y, fair=fair).values, abs(f.isel(member=0) - y).values,
                                   atol=1e-12)


def test_score_brute_force_with_latitude_weights_and_mask():
    f, y = _random(members=7)
    y = y.where(~((y.latitude == y.latitude[1]) & (y.longitude == 3)))  # a masked cell
    s = M.score(f, y, "member")
    lat = y.latitude.values  # 60 to 40 by -5: cells 62.5-57.5, ..., 42.5-37.5
    lat_w = np.sin(np.deg2rad(lat + 2.5)) - np.sin(np.deg2rad(lat - 2.5))
    lat_w = lat_w / lat_w.mean()
    x = f.values
    for k in range(y.sizes["lead_time"]):
        num = {"crps": 0.0, "crps_standard": 0.0, "se": 0.0, "var": 0.0}
        den = 0.0
        for i in range(y.sizes["latitude"]):
            for j in range(y.sizes["longitude"]):
                yy = y.values[k, i, j]
                if np.isnan(yy):
                    continue
                m = x[:, k, i, j]
                pairs = abs(m[:, None] - m[None, :]).sum()
                num["crps"] += lat_w[i] * (np.mean(abs(m - yy)) - pairs / (2 * 7 * 6))  # fair: M (M - 1)
                num["crps_standard"] += lat_w[i] * (np.mean(abs(m - yy)) - pairs / (2 * 7 * 7))
                num["se"] += lat_w[i] * (m.mean() - yy) ** 2
                num["var"] += lat_w[i] * m.var(ddof=1)
                den += lat_w[i]
        rmse, spread = np.sqrt(num["se"] / den), np.sqrt(num["var"] / den)
        assert s["crps"].values[k] == pytest.approx(num["crps"] / den, abs=1e-10)
        assert s["crps_standard"].values[k] == pytest.approx(num["crps_standard"] / den, abs=1e-10)
        assert s["rmse"].values[k] == pytest.approx(rmse, abs=1e-10)
        assert s["spread"].values[k] == pytest.approx(spread, abs=1e-10)
        assert s["ssr"].values[k] == pytest.approx(spread / rmse, abs=1e-10)


def test_nan_cells_are_ignored():
    f, y = _random(members=6)
    bad = y.copy()
    bad[:, 0, :] = np.nan
    full = M.score(f.isel(latitude=slice(1, None)), y.isel(latitude=slice(1, None)))
    masked = M.score(f, bad)
    for k in ("crps", "crps_standard", "rmse", "spread"):
        np.testing.assert_allclose(masked[k].values, full[k].values, rtol=1e-12)
    assert np.isfinite(masked["crps"].values).all()


def test_rank_histogram_brute_force():
    f, y = _random(members=4)
    h = M.rank_histogram(f, y, "member", reduce_dims=["latitude", "longitude"])
    x = f.values
    for k in range(y.sizes["lead_time"]):
        counts = np.zeros(5, int)
        for i, j in np.ndindex(y.shape[1:]):
            counts[int((x[:, k, i, j] < y.values[k, i, j]).sum())] += 1
        np.testing.assert_array_equal(h.sel(lead_time=k).values, counts)


def test_calibrated_ensemble_scores_near_one():
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(2000,))
    f = xr.DataArray(mu + rng.normal(size=(20, 2000)), dims=("member", "x"))
    y = xr.DataArray(mu + rng.normal(size=2000), dims=("x",))
    s = M.score(f, y, keep_dims=())
    assert 0.93 < float(s["ssr"]) < 1.07
    hist = s["rank_histogram"].values / 2000
    assert np.abs(hist - 1 / 21).max() < 0.025
