"""Covariance structures of the MMRM, parameterised as the R package ``mmrm`` does.

Sigma (T x T, the covariance of one participant's outcomes over the follow-up waves) is a function of an
unconstrained vector theta (``mmrm`` vignettes "Model Fitting Algorithm" and "Covariance Structures",
Sabanes Bove et al., openpharma/mmrm):

- ``us``     unstructured, Sigma = L L' with L = D Ltilde, D = diag(exp(theta_1..T)) and Ltilde unit lower
             triangular filled row-wise by theta_{T+1..}: (l21, l31, l32, l41, ...); T(T+1)/2 parameters.
- ``toeph``  heterogeneous Toeplitz: log SDs, then f(rho_1..rho_{T-1}), corr(s, t) = rho_|s-t|.
- ``toep``   homogeneous Toeplitz: log SD, then f(rho_1..rho_{T-1}).
- ``ar1h``   heterogeneous AR(1): log SDs, then f(rho); corr(s, t) = rho^|s-t|.
- ``ar1``    homogeneous AR(1): log SD, f(rho).
- ``csh``    heterogeneous compound symmetry: log SDs, then logit((rho + a)/(1 + a)), a = 1/(T-1).
- ``cs``     homogeneous compound symmetry: log SD, logit((rho + a)/(1 + a)).

with f(rho) = sign(rho) sqrt(rho^2/(1 - rho^2)), inverse rho = theta/sqrt(1 + theta^2). As in ``mmrm``
the Toeplitz parameters are not constrained to a positive-definite matrix; a theta whose Sigma is not
positive definite gets an infinite objective.

Derivatives: the unstructured structure's first and second derivatives are written out below; the others
use complex-step differentiation (Squire & Trapp 1998, SIAM Rev 40:110), exact to rounding because each
Sigma(theta) is an analytic function, and their second derivatives (needed only by Kenward-Roger) central
differences of those exact first derivatives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisInputError

STRUCTURES: tuple[str, ...] = ("us", "toeph", "toep", "ar1h", "ar1", "csh", "cs")


def _rho(theta):  # f^{-1}: R -> (-1, 1); analytic, so it also takes complex arguments
    return theta / np.sqrt(1.0 + theta * theta)


def _f(rho: float) -> float:
    return math.copysign(math.sqrt(rho * rho / (1.0 - rho * rho)), rho)


def _with_sds(log_sd, corr):
    sd = np.exp(log_sd)
    return sd[:, None] * corr * sd[None, :]


def _toeplitz(rhos, n: int):
    lag = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    r = np.concatenate([np.ones(1, dtype=rhos.dtype), rhos])
    return r[lag]


def _ar1(rho, n: int):
    lag = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return rho ** lag


def _cs(theta, n: int):
    a = 1.0 / (n - 1)
    rho = (1.0 + a) / (1.0 + np.exp(-theta)) - a
    return np.where(np.eye(n, dtype=bool), 1.0 + 0.0 * rho, rho)


def _unstructured_l(theta, n: int):
    lt = np.eye(n, dtype=theta.dtype)
    lt[np.tril_indices(n, -1)] = theta[n:]  # numpy's tril indices run row by row: l21, l31, l32, ...
    return np.exp(theta[:n])[:, None] * lt


_SIGMA: dict[str, Callable] = {
    "us": lambda th, n: (lambda l: l @ l.T)(_unstructured_l(th, n)),
    "toeph": lambda th, n: _with_sds(th[:n], _toeplitz(_rho(th[n:]), n)),
    "toep": lambda th, n: _with_sds(np.repeat(th[:1], n), _toeplitz(_rho(th[1:]), n)),
    "ar1h": lambda th, n: _with_sds(th[:n], _ar1(_rho(th[n]), n)),
    "ar1": lambda th, n: _with_sds(np.repeat(th[:1], n), _ar1(_rho(th[1]), n)),
    "csh": lambda th, n: _with_sds(th[:n], _cs(th[n], n)),
    "cs": lambda th, n: _with_sds(np.repeat(th[:1], n), _cs(th[1], n)),
}


@dataclass(frozen=True)
class CovarianceStructure:
    """One structure over ``n_waves`` follow-up waves: Sigma(theta), its derivatives and a start."""

    name: str
    n_waves: int

    def __post_init__(self) -> None:
        if self.name not in STRUCTURES:
            raise AnalysisInputError(f"covariance structure must be one of {STRUCTURES}, got {self.name!r}")
        if self.n_waves < 1 or (self.name in ("csh", "cs") and self.n_waves < 2):
            raise AnalysisInputError(f"structure {self.name} needs more follow-up waves than {self.n_waves}")

    @property
    def n_theta(self) -> int:
        n = self.n_waves
        return {"us": n * (n + 1) // 2, "toeph": 2 * n - 1, "toep": n, "ar1h": n + 1, "ar1": 2,
                "csh": n + 1, "cs": 2}[self.name] if n > 1 else 1

    def sigma(self, theta: np.ndarray) -> np.ndarray:
        th = np.asarray(theta)
        if self.n_waves == 1:  # one wave: every structure is one variance
            return np.exp(2 * th[:1])[:, None]
        return _SIGMA[self.name](th, self.n_waves)

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """dSigma/dtheta_h, shape (k, T, T)."""
        th = np.asarray(theta, dtype=float)
        if self.name == "us" and self.n_waves > 1:
            return _us_derivatives(th, self.n_waves)[0]
        k, step = th.size, 1e-30
        out = np.empty((k, self.n_waves, self.n_waves))
        for h in range(k):
            tc = th.astype(complex)
            tc[h] += 1j * step
            out[h] = self.sigma(tc).imag / step
        return out

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """d2 Sigma / dtheta_h dtheta_j, shape (k, k, T, T)."""
        th = np.asarray(theta, dtype=float)
        if self.name == "us" and self.n_waves > 1:
            return _us_derivatives(th, self.n_waves)[1]
        k = th.size
        out = np.empty((k, k, self.n_waves, self.n_waves))
        for j in range(k):
            e = np.zeros(k)
            e[j] = 1e-5 * max(1.0, abs(th[j]))
            out[:, j] = (self.jacobian(th + e) - self.jacobian(th - e)) / (2 * e[j])
        return 0.5 * (out + out.transpose(1, 0, 2, 3))

    def start(self, sigma0: np.ndarray) -> np.ndarray:
        """theta whose Sigma approximates a positive-definite ``sigma0`` (e.g. a moment estimate)."""
        s0 = np.asarray(sigma0, dtype=float)
        n = self.n_waves
        sd = np.sqrt(np.diag(s0))
        if n == 1:
            return np.log(sd)
        corr = s0 / np.outer(sd, sd)
        lag_mean = np.array([np.mean(np.diag(corr, k)) for k in range(1, n)])
        log_sd, log_sd1 = np.log(sd), np.array([0.5 * math.log(float(np.mean(sd**2)))])
        clip = lambda r, lo=-0.9: float(np.clip(r, lo, 0.95))  # noqa: E731
        if self.name == "us":
            chol = np.linalg.cholesky(s0)
            diag = np.diag(chol)
            return np.concatenate([np.log(diag), (chol / diag[:, None])[np.tril_indices(n, -1)]])
        if self.name in ("toeph", "toep"):
            r1 = clip(lag_mean[0])
            rhos = np.array([r1**k for k in range(1, n)])  # an AR(1) start: always positive definite
            return np.concatenate([log_sd if self.name == "toeph" else log_sd1, [_f(r) for r in rhos]])
        if self.name in ("ar1h", "ar1"):
            return np.concatenate([log_sd if self.name == "ar1h" else log_sd1, [_f(clip(lag_mean[0]))]])
        a = 1.0 / (n - 1)
        off = corr[~np.eye(n, dtype=bool)].mean()
        rho = clip(off, -a + 0.05)
        u = (rho + a) / (1 + a)
        return np.concatenate([log_sd if self.name == "csh" else log_sd1, [math.log(u / (1 - u))]])


def _us_derivatives(theta: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivatives of Sigma = L L' for the unstructured parameterisation.

    dL/dtheta_i (log SD of row i) = E_ii L; dL/dl_ij = exp(theta_i) e_i e_j'; the second derivatives of L
    are d2L/dtheta_i^2 = E_ii L and d2L/dtheta_i dl_ij = exp(theta_i) e_i e_j', all others zero. Then
    dSigma = dL L' + L dL' and d2Sigma = L_hj L' + L L_hj' + L_h L_j' + L_j L_h'."""
    lmat = _unstructured_l(theta, n)
    k = theta.size
    rows, cols = np.tril_indices(n, -1)
    dl = np.zeros((k, n, n))
    for i in range(n):
        dl[i, i, :] = lmat[i, :]
    for h, (i, j) in enumerate(zip(rows, cols, strict=True), start=n):
        dl[h, i, j] = math.exp(theta[i])
    d2l = np.zeros((k, k, n, n))
    for i in range(n):
        d2l[i, i, i, :] = lmat[i, :]
    for h, (i, j) in enumerate(zip(rows, cols, strict=True), start=n):
        d2l[i, h, i, j] = d2l[h, i, i, j] = math.exp(theta[i])
    first = dl @ lmat.T
    first = first + first.transpose(0, 2, 1)
    second = d2l @ lmat.T
    second = second + second.transpose(0, 1, 3, 2)
    cross = np.einsum("hab,jcb->hjac", dl, dl)
    second = second + cross + cross.transpose(1, 0, 2, 3)
    return first, second


__all__ = ["STRUCTURES", "CovarianceStructure"]
