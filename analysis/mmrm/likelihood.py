r"""The MMRM likelihood, its gradient and the fixed-effect covariances, all from pattern statistics.

Notation (module docstring of ``analysis/mmrm/__init__.py``): T follow-up waves, p z-columns, q fixed
effects with vec(B) = M beta. Patterns are *padded* to T waves so that every pattern is handled by the
same array code: with D_S = diag(1 if wave observed), the padded covariance V*_S = D_S Sigma D_S + (I - D_S)
is block diagonal (Sigma_SS and an identity), so det V*_S = det Sigma_SS and the observed block of its
inverse is Sigma_SS^{-1}. W_S = D_S (V*_S)^{-1} D_S is the T x T padded inverse (zero on unobserved waves),
and the padded sums Szy (p x T) and Syy (T x T) are zero on unobserved waves. Then

    H(theta)   = X'V^{-1}X = M' [ sum_S Szz_S (x) W_S ] M
    g(theta)   = X'V^{-1}y = M' vec( sum_S W_S Szy_S' )
    beta-hat   = H^{-1} g,      sum_i r_i'V_i^{-1}r_i = sum_S tr(W_S Syy_S) - g' beta-hat
    -2 l_ML    = N log 2 pi + sum_S n_S log det Sigma_SS + sum_i r_i'V_i^{-1}r_i
    -2 l_REML  = (N - q) log 2 pi + sum_S n_S log det Sigma_SS + log det H + sum_i r_i'V_i^{-1}r_i

(N observed values; the REML form is SAS PROC MIXED's and ``mmrm``'s, "Model Fitting Algorithm" vignette).

**Gradient.** beta-hat minimises the quadratic form, so (envelope theorem) only Sigma's explicit
appearances are differentiated: with Sigma_h = dSigma/dtheta_h,

    d(-2 l)/dtheta_h = tr(A Sigma_h),
    A = sum_S [ n_S W_S - W_S R_S W_S - (REML) W_S G_S W_S ],
    R_S = Syy_S - B Szy_S - Szy_S' B' + B Szz_S B'   (B from beta-hat; only W R W is used, so the
                                                       unobserved rows do not matter),
    G_S = sum_{a,b} Szz_S[a,b] C_ab,   C = M H^{-1} M' in T x T blocks C_ab,

using d log det Sigma_SS = tr(W_S Sigma_h), dW_S = -W_S Sigma_h W_S and
d log det H = tr(H^{-1} dH) = -sum_S tr(C (Szz_S (x) W_S Sigma_h W_S)). One gradient costs a few small
array products per pattern, whatever the number of participants.

**Fixed-effect covariances.** Model based: Phi = H^{-1}. Its derivatives, for Satterthwaite and
Kenward-Roger (Kenward & Roger 1997, Biometrics 53:983; ``mmrm`` "Kenward-Roger" vignette), are built from

    P_h  = dH/dtheta_h = -M' [ sum_S Szz_S (x) W_S Sigma_h W_S ] M,
    Q_hj = X' dV^{-1}_h V dV^{-1}_j X = M' [ sum_S Szz_S (x) W_S Sigma_h W_S Sigma_j W_S ] M,
    R_hj = X' V^{-1} Sigma_hj V^{-1} X = M' [ sum_S Szz_S (x) W_S Sigma_hj W_S ] M,

which need Szz only. The sandwich (CR0) needs the fourth-order sums (``schemas/mmrm_stats.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.mmrm.covariance import CovarianceStructure
from analysis.mmrm.design import MMRMDesign
from schemas.mmrm_stats import MMRMStatistics
from schemas.suffstats import InsufficientData

LOG_2PI = math.log(2.0 * math.pi)


class SigmaNotPositiveDefinite(ArithmeticError):
    """Sigma(theta), or a pattern's block of it, is not positive definite."""


class DesignNotEstimable(ArithmeticError):
    """X'V^{-1}X is singular: some fixed effect is not identified by the observed patterns."""


# The smallest eigenvalue of X'V^{-1}X scaled to a unit diagonal that still counts as identified: a singular
# matrix passes a Cholesky factorisation with rounding-error pivots, and the fit would then be arbitrary.
IDENTIFIED_EIGENVALUE = 1e-10


def identified_cholesky(h: np.ndarray) -> np.ndarray:
    """The Cholesky factor of the information ``h`` (X'V^{-1}X), or :class:`DesignNotEstimable` when a fixed
    effect is not identified. The check is on ``h`` scaled to a unit diagonal, so a covariate's unit does not
    matter, and it catches the singular matrices that rounding lets through a plain Cholesky."""
    diag = np.diag(h)
    if diag.size and (not np.all(np.isfinite(h)) or np.any(diag <= 0)
                      or np.linalg.eigvalsh(h / np.sqrt(np.outer(diag, diag)))[0] <= IDENTIFIED_EIGENVALUE):
        raise DesignNotEstimable("X'V^{-1}X is singular: a fixed effect is not identified by the data "
                                 "(an arm or wave without participants, or collinear covariates)")
    try:
        return np.linalg.cholesky(h)
    except np.linalg.LinAlgError:
        raise DesignNotEstimable("X'V^{-1}X is singular: a fixed effect is not identified by the data "
                                 "(an arm or wave without participants, or collinear covariates)") from None


@dataclass(frozen=True, eq=False)
class PaddedPatterns:
    """Pattern statistics stacked and padded to T waves (K patterns): counts (K,), masks (K, T),
    Szz (K, p, p), Szy (K, p, T), Syy (K, T, T) and, when present, the fourth-order sums padded alike."""

    n: np.ndarray
    mask: np.ndarray
    szz: np.ndarray
    szy: np.ndarray
    syy: np.ndarray
    zzyy: np.ndarray | None
    zzzy: np.ndarray | None
    zzzz: np.ndarray | None

    @classmethod
    def of(cls, stats: MMRMStatistics, *, fourth_order: bool | None = None) -> PaddedPatterns:
        if not stats.patterns:
            raise InsufficientData("the MMRM", 1, 0, "statistics without participants")
        fourth = stats.fourth_order if fourth_order is None else fourth_order
        n_w, p, k = len(stats.waves), len(stats.z_columns), len(stats.patterns)
        n = np.array([pat.n_participants for pat in stats.patterns], dtype=float)
        mask = np.zeros((k, n_w))
        szz = np.stack([pat.szz for pat in stats.patterns])
        szy, syy = np.zeros((k, p, n_w)), np.zeros((k, n_w, n_w))
        zzyy = np.zeros((k, p, p, n_w, n_w)) if fourth else None
        zzzy = np.zeros((k, p, p, p, n_w)) if fourth else None
        zzzz = np.stack([pat.zzzz for pat in stats.patterns]) if fourth else None
        for b, pat in enumerate(stats.patterns):
            obs = list(pat.observed)
            mask[b, obs] = 1.0
            szy[b][:, obs] = pat.szy
            syy[b][np.ix_(obs, obs)] = pat.syy
            if fourth:
                zzyy[b][np.ix_(range(p), range(p), obs, obs)] = pat.zzyy
                zzzy[b][..., obs] = pat.zzzy
        return cls(n, mask, szz, szy, syy, zzyy, zzzy, zzzz)

    @property
    def n_obs(self) -> float:
        return float(self.n @ self.mask.sum(axis=1))


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything the likelihood computes at one theta (kept for the gradient and the covariances)."""

    theta: np.ndarray
    sigma: np.ndarray
    weights: np.ndarray          # W_S, (K, T, T)
    information: np.ndarray      # H = X'V^{-1}X, (q, q)
    beta: np.ndarray
    neg2_loglik: float


class PatternLikelihood:
    """-2 log-likelihood (ML or REML) of an MMRM and its derivatives, from pattern statistics."""

    def __init__(self, stats: MMRMStatistics, design: MMRMDesign, structure: CovarianceStructure, *, reml: bool = True):
        if stats.z_columns != design.z_columns or stats.waves != design.waves:
            raise ValueError(f"the statistics ({stats.z_columns} x {stats.waves}) do not belong to this design "
                             f"({design.z_columns} x {design.waves})")
        if structure.n_waves != design.n_waves:
            raise ValueError("the covariance structure has another number of waves than the design")
        self.design, self.structure, self.reml = design, structure, reml
        self.data = PaddedPatterns.of(stats)
        self.m = design.mean_map()
        self.n_waves, self.n_z = design.n_waves, len(design.z_columns)
        self.n_coef = self.m.shape[1]
        self.n_obs = self.data.n_obs

    # -- building blocks ------------------------------------------------------------------------
    def weights(self, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Padded inverses W_S (K, T, T) and log det Sigma_SS (K,)."""
        mask = self.data.mask
        vstar = mask[:, :, None] * sigma[None] * mask[:, None, :] + np.eye(self.n_waves)[None] * (1.0 - mask)[:, None, :]
        try:
            chol = np.linalg.cholesky(vstar)
        except np.linalg.LinAlgError:
            raise SigmaNotPositiveDefinite("Sigma (or a pattern's block of it) is not positive definite") from None
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        inv = np.linalg.inv(vstar)
        return mask[:, :, None] * inv * mask[:, None, :], logdet

    def _kron_sum(self, per_pattern_tt: np.ndarray) -> np.ndarray:
        """M' [sum_S Szz_S (x) A_S] M for per-pattern T x T matrices A_S (K, T, T)."""
        k = np.einsum("kab,kts->atbs", self.data.szz, per_pattern_tt).reshape(self.n_z * self.n_waves, -1)
        return self.m.T @ k @ self.m

    def information(self, weights: np.ndarray) -> np.ndarray:
        return self._kron_sum(weights)

    def coefficient_matrix(self, beta: np.ndarray) -> np.ndarray:
        """B (T x p) from beta."""
        return (self.m @ beta).reshape(self.n_z, self.n_waves).T

    def gls_system(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H = X'V^{-1}X and g = X'V^{-1}y for padded inverses W_S."""
        return self.information(weights), self.m.T @ np.einsum("kts,kas->at", weights, self.data.szy).reshape(-1)

    def residual_crossproducts(self, beta: np.ndarray) -> np.ndarray:
        """R_S(B) = sum_i r_i r_i' per pattern (K, T, T), padded; entries of unobserved waves are not zero
        (B Szz B' fills them) and must meet a zero of W_S, as they do in W R W."""
        d, b = self.data, self.coefficient_matrix(beta)
        bszy = np.einsum("tp,kps->kts", b, d.szy)
        return d.syy - bszy - bszy.transpose(0, 2, 1) + np.einsum("ta,kab,sb->kts", b, d.szz, b)

    # -- the objective ---------------------------------------------------------------------------
    def evaluate(self, theta: np.ndarray) -> Evaluation:
        theta = np.asarray(theta, dtype=float)
        sigma = self.structure.sigma(theta)
        w, logdet = self.weights(sigma)
        h, g = self.gls_system(w)
        chol_h = identified_cholesky(h)
        beta = np.linalg.solve(h, g)
        quad = float(np.einsum("kts,kts->", w, self.data.syy)) - float(g @ beta)
        total = float(self.data.n @ logdet) + quad
        if self.reml:
            total += (self.n_obs - self.n_coef) * LOG_2PI + 2.0 * float(np.log(np.diag(chol_h)).sum())
        else:
            total += self.n_obs * LOG_2PI
        return Evaluation(theta, sigma, w, h, beta, total)

    def gradient_matrix(self, ev: Evaluation) -> np.ndarray:
        """A (T x T) with d(-2 l)/dtheta_h = tr(A Sigma_h) (module docstring)."""
        d, w = self.data, ev.weights
        resid = self.residual_crossproducts(ev.beta)
        a = np.einsum("k,kts->ts", d.n, w) - (w @ resid @ w).sum(axis=0)
        if self.reml:
            c = (self.m @ np.linalg.solve(ev.information, self.m.T)).reshape(self.n_z, self.n_waves, self.n_z, self.n_waves)
            g_s = np.einsum("kab,atbs->kts", d.szz, c)
            a -= (w @ g_s @ w).sum(axis=0)
        return 0.5 * (a + a.T)

    def gradient(self, ev: Evaluation) -> np.ndarray:
        return np.einsum("ab,hab->h", self.gradient_matrix(ev), self.structure.jacobian(ev.theta))

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        ev = self.evaluate(theta)
        return ev.neg2_loglik, self.gradient(ev)

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """d2(-2 l)/dtheta dtheta' by central differences of the analytic gradient (the step is small
        against theta's scale, so the error is of order 1e-9 relative)."""
        theta = np.asarray(theta, dtype=float)
        k = theta.size
        out = np.empty((k, k))
        for j in range(k):
            step = 1e-5 * max(1.0, abs(theta[j]))
            e = np.zeros(k)
            e[j] = step
            out[:, j] = (self.gradient(self.evaluate(theta + e)) - self.gradient(self.evaluate(theta - e))) / (2 * step)
        return 0.5 * (out + out.T)

    # -- covariances of beta-hat -------------------------------------------------------------------
    def p_matrices(self, ev: Evaluation) -> np.ndarray:
        """P_h = dH/dtheta_h, shape (k, q, q)."""
        jac = self.structure.jacobian(ev.theta)
        wjw = np.einsum("kab,hbc,kcd->hkad", ev.weights, jac, ev.weights)
        return -np.stack([self._kron_sum(x) for x in wjw])

    def q_and_r_matrices(self, ev: Evaluation, *, second_derivatives: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Q_hj and R_hj of Kenward-Roger, shapes (k, k, q, q); R is zero without ``second_derivatives``."""
        jac, w = self.structure.jacobian(ev.theta), ev.weights
        hess = self.structure.hessian(ev.theta) if second_derivatives else None
        wj = np.einsum("kab,hbc->hkac", w, jac)                      # W Sigma_h
        k_theta = jac.shape[0]
        q = np.empty((k_theta, k_theta, self.n_coef, self.n_coef))
        r = np.empty_like(q)
        for h in range(k_theta):
            for j in range(h, k_theta):
                q[h, j] = self._kron_sum(wj[h] @ wj[j] @ w)
                q[j, h] = q[h, j].T
                r[h, j] = r[j, h] = self._kron_sum(w @ hess[h, j] @ w) if hess is not None else 0.0
        return q, r

    def sandwich_meat(self, ev: Evaluation) -> np.ndarray:
        """sum_i X_i'V_i^{-1} r_i r_i' V_i^{-1} X_i (q x q) from the fourth-order sums."""
        d = self.data
        if d.zzzz is None:
            raise InsufficientData("the sandwich covariance (fourth-order sums)", 1, 0,
                                   "statistics computed without fourth_order=True")
        b = self.coefficient_matrix(ev.beta)
        cross = np.einsum("sc,kabct->kabst", b, d.zzzy)
        k4 = (d.zzyy - cross - cross.transpose(0, 1, 2, 4, 3)
              + np.einsum("sc,td,kabcd->kabst", b, b, d.zzzz))
        meat = np.einsum("kus,kabst,kvt->aubv", ev.weights, k4, ev.weights).reshape(self.n_z * self.n_waves, -1)
        return self.m.T @ meat @ self.m


__all__ = ["DesignNotEstimable", "Evaluation", "PaddedPatterns", "PatternLikelihood", "SigmaNotPositiveDefinite"]
