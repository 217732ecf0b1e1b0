"""Maximum-likelihood confirmatory factor analysis, single- and multi-group, with the
cross-group equality constraints that measurement invariance needs.

semopy fits single-group CFA but its multi-group support is configural only, so this is a
small ML-CFA written for the invariance ladder (Joreskog 1971; Meredith 1993):

    Sigma_g = Lambda_g Phi_g Lambda_g' + Theta_g          (Theta diagonal)
    mu_g    = nu_g + Lambda_g kappa_g

    F_ML = sum_g (n_g / N) [ log|Sigma_g| + tr(S_g Sigma_g^-1) - log|S_g| - p
                             + (m_g - mu_g)' Sigma_g^-1 (m_g - mu_g) ]

with S_g the covariance matrix with divisor n_g (normal likelihood) and chi-square
= N * F_ML, as lavaan does (``likelihood = "normal"``). Identification: the first item of
each factor is its marker (loading fixed to 1); factor means are 0 except under scalar
invariance, where they are free in every group but the first. Levels:

- configural: same pattern, every parameter free per group;
- metric:     loadings equal across groups;
- scalar:     loadings and intercepts equal across groups.

Fit indices follow lavaan: the baseline is the independence model (free variances and
means per group); CFI = 1 - max(chi2 - df, 0) / max(chi2_b - df_b, chi2 - df, 0) (Bentler
1990); RMSEA = sqrt(max(chi2 - df, 0) / (df N)) x sqrt(G) (Steiger 1990; lavaan's
multi-group convention). The gradient is analytic; L-BFGS-B minimizes F_ML with residual
and factor variances bounded below by 1e-6 (no Heywood cases).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from instruments.errors import PsychometricsError

LEVELS = ("configural", "metric", "scalar")
_VAR_FLOOR = 1e-6


@dataclass(frozen=True)
class GroupMoments:
    """Sufficient statistics of one group: mean vector, covariance (divisor n), n."""

    name: str
    mean: np.ndarray
    cov: np.ndarray
    n: int


@dataclass(frozen=True)
class CFAFit:
    """One fitted (multi-group) CFA. Parameter arrays are per group, in ``groups`` order."""

    level: str
    items: tuple[str, ...]
    factors: tuple[tuple[str, tuple[str, ...]], ...]
    groups: tuple[str, ...]
    n_obs: tuple[int, ...]
    chi2: float
    df: int
    p_value: float
    cfi: float
    rmsea: float
    baseline_chi2: float
    baseline_df: int
    n_free_parameters: int
    loadings: tuple[np.ndarray, ...]          # p x m per group
    factor_cov: tuple[np.ndarray, ...]         # m x m per group
    residual_var: tuple[np.ndarray, ...]       # p per group
    intercepts: tuple[np.ndarray, ...]         # p per group
    factor_means: tuple[np.ndarray, ...]       # m per group

    def standardized_loadings(self, group: int = 0) -> np.ndarray:
        lam, phi, theta = self.loadings[group], self.factor_cov[group], self.residual_var[group]
        sd_obs = np.sqrt(np.diag(lam @ phi @ lam.T) + theta)
        return lam * np.sqrt(np.diag(phi))[None, :] / sd_obs[:, None]


def moments(items: pd.DataFrame, group: pd.Series | None = None) -> list[GroupMoments]:
    """Listwise-complete moments per group (one group when ``group`` is None)."""
    data = items.astype(float)
    if group is None:
        labels = pd.Series("all", index=data.index)
    else:
        labels = pd.Series(np.asarray(group), index=data.index)
    keep = data.notna().all(axis=1) & labels.notna()
    data, labels = data[keep], labels[keep]
    out = []
    for name in pd.unique(labels):
        x = data[labels == name].to_numpy()
        if len(x) <= x.shape[1]:
            raise PsychometricsError(
                f"group {name!r} has {len(x)} complete rows for {x.shape[1]} items; a CFA needs more rows than items"
            )
        centred = x - x.mean(axis=0)
        out.append(GroupMoments(str(name), x.mean(axis=0), centred.T @ centred / len(x), len(x)))
    return out


class _Spec:
    """Where each free parameter lives; equality constraints share a parameter index."""

    def __init__(self, p: int, pattern: list[list[int]], n_groups: int, level: str) -> None:
        self.p, self.m, self.G = p, len(pattern), n_groups
        self.pattern = pattern
        self.n_par = 0
        eq_load = level in ("metric", "scalar")
        eq_int = level == "scalar"
        shared_load: dict[tuple[int, int], int] = {}
        shared_int: dict[int, int] = {}
        self.load: list[list[tuple[int, int, int]]] = []   # (item, factor, index)
        self.phi: list[list[tuple[int, int, int]]] = []
        self.theta: list[np.ndarray] = []
        self.nu: list[np.ndarray] = []
        self.kappa: list[list[tuple[int, int]]] = []
        for g in range(n_groups):
            loads = []
            for f, members in enumerate(pattern):
                for i in members[1:]:
                    if eq_load:
                        if (i, f) not in shared_load:
                            shared_load[(i, f)] = self._new()
                        loads.append((i, f, shared_load[(i, f)]))
                    else:
                        loads.append((i, f, self._new()))
            self.load.append(loads)
            self.phi.append([(a, b, self._new()) for a in range(self.m) for b in range(a + 1)])
            self.theta.append(np.array([self._new() for _ in range(p)]))
            if eq_int:
                for i in range(p):
                    if i not in shared_int:
                        shared_int[i] = self._new()
                self.nu.append(np.array([shared_int[i] for i in range(p)]))
            else:
                self.nu.append(np.array([self._new() for _ in range(p)]))
            self.kappa.append([(f, self._new()) for f in range(self.m)] if eq_int and g > 0 else [])

    def _new(self) -> int:
        self.n_par += 1
        return self.n_par - 1

    def matrices(self, x: np.ndarray, g: int):
        lam = np.zeros((self.p, self.m))
        for f, members in enumerate(self.pattern):
            lam[members[0], f] = 1.0
        for i, f, k in self.load[g]:
            lam[i, f] = x[k]
        phi = np.zeros((self.m, self.m))
        for a, b, k in self.phi[g]:
            phi[a, b] = phi[b, a] = x[k]
        theta = x[self.theta[g]]
        nu = x[self.nu[g]]
        kappa = np.zeros(self.m)
        for f, k in self.kappa[g]:
            kappa[f] = x[k]
        return lam, phi, theta, nu, kappa

    def bounds(self) -> list[tuple[float | None, float | None]]:
        b: list[tuple[float | None, float | None]] = [(None, None)] * self.n_par
        for g in range(self.G):
            for k in self.theta[g]:
                b[k] = (_VAR_FLOOR, None)
            for a, c, k in self.phi[g]:
                if a == c:
                    b[k] = (_VAR_FLOOR, None)
        return b


def _objective(x: np.ndarray, spec: _Spec, groups: list[GroupMoments], weights: np.ndarray):
    total = 0.0
    grad = np.zeros_like(x)
    p = spec.p
    for g, gm in enumerate(groups):
        lam, phi, theta, nu, kappa = spec.matrices(x, g)
        sigma = lam @ phi @ lam.T + np.diag(theta)
        try:
            chol = np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(x)
        inv = np.linalg.inv(sigma)
        logdet = 2.0 * np.log(np.diag(chol)).sum()
        d = gm.mean - (nu + lam @ kappa)
        inv_d = inv @ d
        _, logdet_s = np.linalg.slogdet(gm.cov)
        f = logdet + np.trace(gm.cov @ inv) - logdet_s - p + d @ inv_d
        total += weights[g] * f
        G = inv @ (sigma - gm.cov - np.outer(d, d)) @ inv
        w = weights[g]
        d_lam = 2.0 * G @ lam @ phi - 2.0 * np.outer(inv_d, kappa)
        d_phi = lam.T @ G @ lam
        for i, fct, k in spec.load[g]:
            grad[k] += w * d_lam[i, fct]
        for a, b, k in spec.phi[g]:
            grad[k] += w * (d_phi[a, b] if a == b else 2.0 * d_phi[a, b])
        np.add.at(grad, spec.theta[g], w * np.diag(G))
        np.add.at(grad, spec.nu[g], w * (-2.0 * inv_d))
        d_kappa = -2.0 * lam.T @ inv_d
        for fct, k in spec.kappa[g]:
            grad[k] += w * d_kappa[fct]
    return total, grad


def _start(spec: _Spec, groups: list[GroupMoments]) -> np.ndarray:
    x = np.zeros(spec.n_par)
    pooled_cov = sum(gm.n * gm.cov for gm in groups) / sum(gm.n for gm in groups)
    pooled_mean = sum(gm.n * gm.mean for gm in groups) / sum(gm.n for gm in groups)
    for g, gm in enumerate(groups):
        for f, members in enumerate(spec.pattern):
            marker = members[0]
            phi_ff = max(0.5 * pooled_cov[marker, marker], 1e-3)
            for i, fct, k in spec.load[g]:
                if fct == f:
                    x[k] = pooled_cov[i, marker] / phi_ff
        for a, b, k in spec.phi[g]:
            x[k] = max(0.5 * pooled_cov[spec.pattern[a][0], spec.pattern[a][0]], 1e-3) if a == b else 0.0
        x[spec.theta[g]] = np.maximum(0.5 * np.diag(gm.cov), 1e-3)
        x[spec.nu[g]] = pooled_mean
    return x


def _baseline(groups: list[GroupMoments]) -> tuple[float, int]:
    chi2 = 0.0
    for gm in groups:
        _, logdet_s = np.linalg.slogdet(gm.cov)
        chi2 += gm.n * (np.log(np.diag(gm.cov)).sum() - logdet_s)
    p = groups[0].cov.shape[0]
    return float(chi2), len(groups) * p * (p - 1) // 2


def fit_cfa(items: pd.DataFrame, factors: dict[str, list[str]] | None = None, group: pd.Series | None = None,
            level: str = "configural") -> CFAFit:
    """Fit an ML CFA to ``items`` (one column per item; rows with a missing item are dropped).

    ``factors`` maps factor name to its items (first item = marker); None means ONE factor
    over all columns, the default for a single instrument score. ``group`` (aligned with
    ``items``) gives a multi-group fit at ``level`` (configural / metric / scalar).
    """
    if level not in LEVELS:
        raise PsychometricsError(f"invariance level {level!r} is not one of {', '.join(LEVELS)}")
    names = [str(c) for c in items.columns]
    factors = factors or {"f1": names}
    used = [c for members in factors.values() for c in members]
    unknown = sorted(set(used) - set(names))
    if unknown:
        raise PsychometricsError(f"factor items {unknown} are not columns of the item frame")
    if len(set(used)) != len(used):
        raise PsychometricsError("an item loads on more than one factor; only simple structure is supported")
    order = used
    groups = moments(items[order], group)
    pattern = []
    for fname, members in factors.items():
        if len(members) < 2:
            raise PsychometricsError(f"factor {fname!r} has fewer than 2 items")
        pattern.append([order.index(c) for c in members])
    spec = _Spec(len(order), pattern, len(groups), level)
    n_total = sum(gm.n for gm in groups)
    weights = np.array([gm.n / n_total for gm in groups])
    res = optimize.minimize(_objective, _start(spec, groups), args=(spec, groups, weights), jac=True,
                            method="L-BFGS-B", bounds=spec.bounds(),
                            options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-15, "gtol": 1e-9})
    if not np.isfinite(res.fun) or res.fun >= 1e9:
        raise PsychometricsError(f"{level} CFA did not converge: {res.message}")
    grad_norm = np.abs(res.jac).max()
    if grad_norm > 1e-4:
        raise PsychometricsError(f"{level} CFA did not converge (max gradient {grad_norm:.2g}): {res.message}")
    p = len(order)
    df = len(groups) * (p * (p + 1) // 2 + p) - spec.n_par
    chi2 = float(n_total * res.fun)
    b_chi2, b_df = _baseline(groups)
    denom = max(b_chi2 - b_df, chi2 - df, 0.0)
    cfi = 1.0 if denom == 0 else 1.0 - max(chi2 - df, 0.0) / denom
    rmsea = float(np.sqrt(max(chi2 - df, 0.0) / (df * n_total)) * np.sqrt(len(groups))) if df > 0 else 0.0
    mats = [spec.matrices(res.x, g) for g in range(len(groups))]
    return CFAFit(
        level=level, items=tuple(order), factors=tuple((k, tuple(v)) for k, v in factors.items()),
        groups=tuple(gm.name for gm in groups), n_obs=tuple(gm.n for gm in groups),
        chi2=chi2, df=int(df), p_value=float(stats.chi2.sf(chi2, df)) if df > 0 else float("nan"),
        cfi=float(cfi), rmsea=rmsea, baseline_chi2=b_chi2, baseline_df=b_df, n_free_parameters=spec.n_par,
        loadings=tuple(m[0] for m in mats), factor_cov=tuple(m[1] for m in mats),
        residual_var=tuple(m[2] for m in mats), intercepts=tuple(m[3] for m in mats),
        factor_means=tuple(m[4] for m in mats),
    )
