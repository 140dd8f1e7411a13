"""A Gaussian mixture whose noised marginals, and hence the exact eps, are known in closed form (for tests,
benchmarks)."""

from __future__ import annotations

import math

import torch

from .schedules import Schedule


class GaussianMixture:
    """p(x) = sum_k w_k N(mu_k, Sigma_k); p_t(x) = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)."""

    def __init__(self, weights, means, covs):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        self.dim = self.means.shape[1]

    @classmethod
    def default_2d(cls) -> GaussianMixture:
        """Three anisotropic components in the plane, unit-order scale."""
        means = [[-1.5, 0.0], [1.0, 1.2], [1.2, -1.0]]
        covs = [[[0.10, 0.04], [0.04, 0.05]], [[0.05, 0.0], [0.0, 0.20]], [[0.08, -0.03], [-0.03, 0.06]]]
        return cls([0.5, 0.3, 0.2], means, covs)

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def cov(self) -> torch.Tensor:
        m = self.mean()
        d = self.means - m
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + (chol[k] @ z[:, :, None])[:, :, 0]).to(torch.float32)

    def score(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """grad_x log p_t(x) at one noise level (alpha, sigma), in float64."""
        x = x.to(torch.float64)
        cov = alpha**2 * self.covs + sigma**2 * torch.eye(self.dim, dtype=torch.float64)  # (K, d, d)
        prec, logdet = torch.linalg.inv(cov), torch.logdet(cov)
        grads, logps = [], []
        for k in range(self.means.shape[0]):
            diff = x - alpha * self.means[k]
            pd = diff @ prec[k]
            grads.append(pd)
            logps.append(torch.log(self.weights[k]) - 0.5 * logdet[k] - 0.5 * torch.linalg.vecdot(diff, pd))
        resp = torch.softmax(torch.stack(logps, 1), dim=1)
        return -sum(resp[:, k : k + 1] * g for k, g in enumerate(grads))

    def posterior_mean(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """E[x0 | x_t = x] = sum_k r_k(x) (mu_k + alpha Sigma_k C_k^-1 (x - alpha mu_k)), C_k = alpha^2 Sigma_k +
        sigma^2 I: defined at alpha = 0 too (where it is the mixture mean), unlike Tweedie's
        (x + sigma^2 score) / alpha."""
        x = x.to(torch.float64)
        cov = alpha**2 * self.covs + sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        prec, logdet = torch.linalg.inv(cov), torch.logdet(cov)
        means, logps = [], []
        for k in range(self.means.shape[0]):
            diff = x - alpha * self.means[k]
            pd = diff @ prec[k]
            means.append(self.means[k] + alpha * pd @ self.covs[k])
            logps.append(torch.log(self.weights[k]) - 0.5 * logdet[k] - 0.5 * torch.linalg.vecdot(diff, pd))
        resp = torch.softmax(torch.stack(logps, 1), dim=1)
        return sum(resp[:, k : k + 1] * m for k, m in enumerate(means))

    def x0_eps_model(self, schedule: Schedule) -> ExactPair:
        """A model with the exact x0_eps(x_t, t) (what a Denoiser offers samplers): valid where alpha = 0 (flow)."""
        return ExactPair(self, schedule)

    def eps_model(self, schedule: Schedule):
        """A model(x_t, t) -> exact eps = -sigma_t * score, usable by every sampler."""

        def model(x, t, *, mask=None, cond=None):
            if bool((t == t[0]).all()):
                alpha, sigma = (float(v) for v in schedule.alpha_sigma(t[:1].to(torch.float64)[0]))
                return (-sigma * self.score(x, alpha, sigma)).to(x.dtype)
            levels = torch.unique(t)
            out = torch.empty_like(x)
            for level in levels.tolist():
                rows = t == level
                alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor(level, dtype=torch.float64)))
                out[rows] = (-sigma * self.score(x[rows], alpha, sigma)).to(x.dtype)
            return out

        return model


class ExactPair:
    """The mixture's exact (E[x0 | x_t], E[eps | x_t]) at one noise level per call (rows share t in samplers)."""

    def __init__(self, gm: GaussianMixture, schedule: Schedule, scale: float = 1.0):
        self.gm, self.schedule, self.scale = gm, schedule, scale

    def x0_eps(self, x, t, *, mask=None, cond=None):
        alpha, sigma = (float(v) for v in self.schedule.alpha_sigma(t[:1].to(torch.float64)[0]))
        x0 = self.gm.posterior_mean(x, alpha, sigma)
        eps = (x.to(torch.float64) - alpha * x0) / sigma
        if self.scale != 1.0:  # a wrong model for negative controls: eps scaled, x0 kept consistent with it
            eps = self.scale * eps
            x0 = (x.to(torch.float64) - sigma * eps) / alpha if alpha > 0 else x0
        return x0.to(x.dtype), eps.to(x.dtype)

    def __call__(self, x, t, *, mask=None, cond=None):
        return self.x0_eps(x, t)[1]


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two equal-size samples (Rabin et al. 2011), averaged over random
    directions."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(a.shape[1], n_proj, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=0, keepdim=True)
    pa = torch.sort(a.to(torch.float64) @ d, dim=0).values
    pb = torch.sort(b.to(torch.float64) @ d, dim=0).values
    if pa.shape[0] != pb.shape[0]:
        q = torch.linspace(0, 1, min(pa.shape[0], pb.shape[0]), dtype=torch.float64)
        pa, pb = torch.quantile(pa, q, dim=0), torch.quantile(pb, q, dim=0)
    return float((pa - pb).abs().mean())


def moment_zscores(x: torch.Tensor, gm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """|sample mean - true mean| and |sample cov - true cov| in units of their standard errors (Gaussian-free SEs)."""
    x = x.to(torch.float64)
    n = x.shape[0]
    mu, cov = gm.mean(), gm.cov()
    se_mean = torch.sqrt(torch.diag(cov) / n)
    z_mean = (x.mean(0) - mu).abs() / se_mean
    d = x - mu
    prods = d[:, :, None] * d[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    z_cov = (prods.mean(0) - cov).abs() / se_cov
    return z_mean, z_cov
