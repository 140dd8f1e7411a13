"""One window (context + horizon) -> the network's inputs: x0, the MaskedSpace mask and the conditioning channels."""
from __future__ import annotations

import torch

CALENDAR = 4


def cond_channels(num_features: int, missing_flag: bool = False, covariates: int = 0) -> int:
    """Conditioning channels of make_inputs: known values, context flag, calendar, a missing flag per feature,
    and the `covariates` features (covariates.py)."""
    return num_features + 1 + CALENDAR + (num_features if missing_flag else 0) + int(covariates)


def anchor_of(window: torch.Tensor, context: int) -> torch.Tensor:
    """The last context step (B, C) of windows (B, L, C), NaN -> 0: forecasts are generated as departures from it."""
    last = window[:, context - 1]
    return torch.where(torch.isfinite(last), last, torch.zeros((), dtype=last.dtype))


def make_inputs(window: torch.Tensor, calendar: torch.Tensor, context: int, valid: torch.Tensor,
                residual: bool = True, base: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                missing_flag: bool = False, covariates: torch.Tensor | None = None):
    """window (B, L, C) normalised with NaN; first `context` steps known -> x0, mask, cond, each (B, *, L).

    x0: the window (NaN filled by 0), taken relative to `base` (B, L, C) when given (ARBase.window_base), else to its
    last context step when `residual` (the model generates departures from persistence, as tendency-predicting
    weather models do), and divided by `scale` (L, C) or (B, L, C) when given (ARBase.window_scale); mask: finite horizon
    entries of features that are ever valid (what is generated and scored); cond: [context values as given (0 where unknown), context flag per step, calendar features], so the
    network sees the absolute state it starts from. With `missing_flag`, C more channels: 1 where a context value is
    missing (NaN), so that a gap is not read as a value at climatology (the 0 it is filled with). `covariates`
    (B, L, F): future-known covariates, encoded (covariates.Covariates.encode), appended last: known over the whole
    window, like the calendar.
    """
    if base is not None:
        target = window - base
        if scale is not None:
            target = target / scale.to(target)
    else:
        target = window - anchor_of(window, context)[:, None, :] if residual else window
    window, target = window.transpose(1, 2), target.transpose(1, 2)  # (B, C, L)
    finite = torch.isfinite(window)
    zero = torch.zeros((), dtype=window.dtype)
    x0 = torch.where(finite, target, zero)
    in_context = torch.zeros(window.shape[-1], dtype=torch.bool, device=window.device)
    in_context[:context] = True
    known = finite & in_context
    mask = finite & ~in_context & valid[:, None]
    flag = in_context.to(x0.dtype).expand(window.shape[0], 1, -1)
    parts = [torch.where(known, window, zero), flag, calendar.transpose(1, 2).to(x0.dtype)]
    if missing_flag:
        parts.append((in_context & ~finite).to(x0.dtype))
    if covariates is not None:
        parts.append(covariates.transpose(1, 2).to(device=x0.device, dtype=x0.dtype))
    cond = torch.cat(parts, dim=1)
    return x0, mask, cond


def grid_cond(cond: torch.Tensor, static: torch.Tensor) -> dict:
    """The gridnet's conditioning: make_inputs' channels (B, 2C + 5 [+ covariates], L) and the locations' static inputs (N, S),
    shared by the batch (a leading 1)."""
    return {"seq": cond, "static": static.to(cond.device)[None] if static.dim() == 2 else static.to(cond.device)}

