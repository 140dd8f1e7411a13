"""The held-out protocol: a forecast whose verifying values the model (or a baseline) was fitted on is in-sample,
and its score is no measure of skill. Forecasting and evaluating refuse init times inside the training period
unless allowed, and then the output is marked in-sample (the attribute `in_sample` = 1, the records' `in_sample`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gendiff.errors import DataError

FLAG = "--allow-in-sample"


def in_sample_inits(init_times, train_end) -> np.ndarray:
    """The init times before the end of the training period: their first verifying value (init + one step) was
    trained on."""
    init = pd.DatetimeIndex(np.atleast_1d(np.asarray(init_times, dtype="datetime64[ns]")))
    return np.asarray(init[init < pd.Timestamp(train_end)].values)


def check_held_out(init_times, train_period, label: str, what: str, allow: bool) -> bool:
    """True when some init time lies inside `train_period` (START, END) and `allow`; DataError naming the overlap
    when it does and not `allow`; False when every init is held out."""
    if train_period is None:
        return False
    start, end = (str(pd.Timestamp(t))[:16] for t in train_period)
    last = pd.Timestamp(train_period[1])
    if len(str(train_period[1]).strip()) <= 10:  # a date alone: the whole day is in the period (period_indices)
        last = last + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
        end = str(last)[:16]
    inside = in_sample_inits(init_times, last)
    if len(inside) == 0:
        return False
    if not allow:
        first, last = (str(pd.Timestamp(t))[:16] for t in (inside[0], inside[-1]))
        raise DataError(f"{label}: {len(inside)} init time(s) from {first} to {last} fall inside {what} "
                        f"({start} to {end}): their verifying values were fitted on; choose inits after {end}, "
                        f"or pass {FLAG} (allow_in_sample=True) to mark the output in-sample")
    return True
