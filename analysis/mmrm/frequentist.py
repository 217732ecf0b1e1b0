"""Frequentist MMRM from pattern statistics: REML (default) or ML, inference on contrasts.

The variance parameters theta are found by quasi-Newton (scipy BFGS on -2 log L per participant, with
the analytic gradient of ``analysis/mmrm/likelihood.py``), then polished by Newton steps on a Hessian
taken as central differences of that gradient. A fit is returned only when the largest |gradient| per
participant is below ``gradient_tolerance`` and the Hessian is positive definite; otherwise
:class:`~analysis.mmrm.results.NotConverged` says which criterion failed. Sigma-hat must be positive
definite (:class:`~analysis.mmrm.results.CovarianceNotPositiveDefinite`).

Inference for a contrast L'beta (as in ``mmrm``; Christensen 2018 / Kuznetsova et al. 2017 for
Satterthwaite, Kenward & Roger 1997 for KR, Liang & Zeger 1986 for the sandwich):

- model based: Var = L'Phi L, Phi = (X'V^{-1}X)^{-1}; Satterthwaite df
  nu = 2 (L'Phi L)^2 / (f' W f), f_h = L' dPhi/dtheta_h L = -L'Phi P_h Phi L, W = Cov(theta-hat) = the
  inverse Hessian of -log L (``mmrm``'s ``theta_vcov``);
- sandwich (CR0, ``mmrm``'s "Empirical"): Var = L'Phi (sum_i s_i s_i') Phi L. Its degrees of freedom here
  are the model-based Satterthwaite ones: ``mmrm`` uses a Bell & McCaffrey (2002) Satterthwaite df for the
  empirical covariance, whose leverage terms need sixth-order sums of z that the pattern statistics do
  not carry (with thousands of participants both are large and the intervals agree);
- Kenward-Roger (REML): Var = L'Phi_A L with Phi_A = Phi + 2 Phi [sum_hj W_hj (Q_hj - P_h Phi P_j
  - R_hj / 4)] Phi (R_hj = 0 for the "linear" variant), and the KR df m of a one-row contrast
  (``mmrm``'s ``h_kr_df``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from analysis.mmrm.covariance import CovarianceStructure
from analysis.mmrm.design import MMRMDesign
from analysis.mmrm.likelihood import (
    DesignNotEstimable,
    Evaluation,
    PatternLikelihood,
    SigmaNotPositiveDefinite,
    identified_cholesky,
)
from analysis.mmrm.results import (
    ContrastEstimate,
    Convergence,
    CovarianceNotPositiveDefinite,
    MMRMFit,
    MMRMFitError,
    NotConverged,
    contrast_estimate,
)
from schemas.results import LONG_RUN
from schemas.mmrm_stats import MMRMStatistics
from schemas.suffstats import InsufficientData


def moment_start(lik: PatternLikelihood) -> np.ndarray:
    """A positive-definite start for Sigma: the available-case covariance of the residuals from the
    Sigma = I (ordinary least squares) fit, or its diagonal when that is not positive definite."""
    d = lik.data
    h, g = lik.gls_system(lik.weights(np.eye(lik.n_waves))[0])
    try:
        identified_cholesky(h)
        beta = np.linalg.solve(h, g)
    except (DesignNotEstimable, np.linalg.LinAlgError):
        raise MMRMFitError("the fixed effects are not identified: X'X is singular (an arm or wave without "
                           "participants, or collinear covariates)") from None
    resid = lik.residual_crossproducts(beta)
    pair = d.mask[:, :, None] * d.mask[:, None, :]
    sums = (pair * resid).sum(axis=0)
    counts = np.einsum("k,kts->ts", d.n, pair)
    if np.any(np.diag(counts) < 2):
        raise InsufficientData("a variance at every follow-up wave", 2, float(np.diag(counts).min()),
                               "the least-observed wave")
    sigma0 = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    try:
        np.linalg.cholesky(sigma0)
        return sigma0
    except np.linalg.LinAlgError:
        return np.diag(np.diag(sigma0))


def _newton_polish(lik: PatternLikelihood, theta: np.ndarray, scale: float, tol: float, max_steps: int = 20) -> tuple[np.ndarray, int]:
    """Newton steps with step halving on a finite-difference Hessian of the analytic gradient."""
    steps = 0
    for steps in range(1, max_steps + 1):
        ev = lik.evaluate(theta)
        grad = lik.gradient(ev)
        if np.max(np.abs(grad)) / scale < tol:
            return theta, steps - 1
        hess = lik.hessian(theta)
        try:
            np.linalg.cholesky(hess)
            direction = -np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            direction = -grad / max(np.max(np.abs(np.diag(hess))), 1.0)
        step = 1.0
        while step > 1e-8:
            try:
                if lik.evaluate(theta + step * direction).neg2_loglik <= ev.neg2_loglik + 1e-12 * abs(ev.neg2_loglik):
                    break
            except SigmaNotPositiveDefinite:
                pass
            step /= 2
        else:
            return theta, steps
        theta = theta + step * direction
    return theta, steps


def _optimise(lik: PatternLikelihood, theta0: np.ndarray, scale: float, tol: float, max_iterations: int) -> tuple[np.ndarray, int, int, str]:
    from scipy.optimize import minimize

    evaluations = 0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1
        try:
            ev = lik.evaluate(theta)
        except SigmaNotPositiveDefinite:
            return math.inf, np.zeros_like(theta)
        return ev.neg2_loglik / scale, lik.gradient(ev) / scale

    res = minimize(objective, theta0, jac=True, method="BFGS", options={"gtol": tol, "maxiter": max_iterations})
    theta = res.x if np.all(np.isfinite(res.x)) else theta0
    theta, newton_steps = _newton_polish(lik, theta, scale, tol)
    return theta, int(res.nit) + newton_steps, evaluations, str(res.message)


def fit_mmrm(stats: MMRMStatistics, design: MMRMDesign, *, structure: str = "us", method: str = "reml",
             level: float = 0.95, kenward_roger: str | None = "linear", gradient_tolerance: float = 1e-7,
             max_iterations: int = 1000) -> MMRMFit:
    """Fit the MMRM to pattern statistics (``schemas.mmrm_stats.MMRMStatistics``).

    ``structure`` is one of ``analysis.mmrm.covariance.STRUCTURES`` (default unstructured), ``method``
    ``"reml"`` or ``"ml"``. The sandwich covariance needs statistics with fourth-order sums. Kenward-Roger is
    computed for REML fits: ``"linear"`` (default) leaves out the second derivatives of Sigma, which is
    SAS's DDFM=KR for the unstructured matrix and ``mmrm``'s "Kenward-Roger-Linear"; ``"full"`` keeps them
    (``mmrm``'s "Kenward-Roger", which then depends on the Cholesky parameterisation); ``None`` skips KR.
    ``gradient_tolerance`` bounds the largest
    |d(-2 log L)/dtheta| per participant at the returned optimum.
    """
    if method not in ("reml", "ml"):
        raise ValueError(f"method must be 'reml' or 'ml', got {method!r}")
    if kenward_roger not in ("linear", "full", None):
        raise ValueError(f"kenward_roger must be 'linear', 'full' or None, got {kenward_roger!r}")
    if not 0.5 < level < 1:
        raise ValueError(f"level must be in (0.5, 1), got {level}")
    reml = method == "reml"
    cov = CovarianceStructure(structure, design.n_waves)
    lik = PatternLikelihood(stats, design, cov, reml=reml)
    n_part = stats.n_participants
    if lik.n_obs - lik.n_coef < cov.n_theta:
        raise InsufficientData(f"an MMRM with {lik.n_coef} fixed effects and {cov.n_theta} covariance parameters",
                               lik.n_coef + cov.n_theta + 1, lik.n_obs, "the observed values")
    sigma0 = moment_start(lik)
    theta0 = cov.start(sigma0)
    try:
        lik.evaluate(theta0)
    except SigmaNotPositiveDefinite:
        raise CovarianceNotPositiveDefinite(f"the {structure} start is not positive definite") from None
    except DesignNotEstimable as err:
        raise MMRMFitError(str(err)) from None
    theta, iterations, evaluations, message = _optimise(lik, theta0, n_part, gradient_tolerance, max_iterations)

    ev = lik.evaluate(theta)
    grad = lik.gradient(ev)
    grad_max = float(np.max(np.abs(grad))) / n_part
    hess = lik.hessian(theta)
    eig_min = float(np.linalg.eigvalsh(hess).min()) / n_part
    convergence = Convergence(iterations, evaluations, grad_max, eig_min, message)
    if not grad_max < gradient_tolerance:
        raise NotConverged(f"the {structure} {method.upper()} fit stopped with a gradient above the tolerance",
                           gradient_max_abs=grad_max, tolerance=gradient_tolerance, optimiser=message)
    if not eig_min > 0:
        raise NotConverged(f"the {structure} {method.upper()} fit stopped where the Hessian is not positive definite "
                           "(a saddle point, or a parameter not identified, e.g. two waves never observed together)",
                           hessian_min_eigenvalue=eig_min)
    sigma_eig = np.linalg.eigvalsh(ev.sigma)
    if not sigma_eig.min() > 0:
        raise CovarianceNotPositiveDefinite("the estimated Sigma is not positive definite",
                                            min_eigenvalue=float(sigma_eig.min()))

    phi = np.linalg.inv(ev.information)
    phi = 0.5 * (phi + phi.T)
    theta_cov = 2.0 * np.linalg.inv(hess)  # inverse Hessian of -log L
    p_mats = lik.p_matrices(ev)
    cov_sandwich = None
    if stats.fourth_order:
        cov_sandwich = phi @ lik.sandwich_meat(ev) @ phi
        cov_sandwich = 0.5 * (cov_sandwich + cov_sandwich.T)
    cov_kr = None
    if reml and kenward_roger is not None:
        cov_kr = _kenward_roger_covariance(lik, ev, phi, theta_cov, p_mats, linear=kenward_roger == "linear")

    k = cov.n_theta
    fit = MMRMFit(
        method=method, structure=structure, coefficient_names=design.coefficient_names, waves=design.waves,
        beta=ev.beta, cov_model_based=phi, cov_sandwich=cov_sandwich, cov_kenward_roger=cov_kr, sigma=ev.sigma,
        theta=theta, theta_cov=theta_cov, neg2_loglik=ev.neg2_loglik, aic=ev.neg2_loglik + 2 * k,
        bic=ev.neg2_loglik + k * math.log(n_part), n_participants=n_part, n_obs=int(round(lik.n_obs)),
        convergence=convergence, interval_level=level, effects=(), p_matrices=p_mats,
    )
    effects = []
    for arm in design.treated:
        for wave in design.waves:
            effects.append(_arm_effect(fit, design, arm, wave, wave, level))
        effects.append(_arm_effect(fit, design, arm, design.waves[-1], LONG_RUN, level))
    return dataclasses.replace(fit, effects=tuple(effects))


def _arm_effect(fit: MMRMFit, design: MMRMDesign, arm: str, wave: str, label: str, level: float) -> ContrastEstimate:
    est = contrast_estimate(fit, design.arm_effect_weights(arm, wave), name=f"{arm} - {design.control} at {label}",
                            level=level)
    return ContrastEstimate(est.name, est.estimate, est.interval_level, est.model_based, est.sandwich,
                            est.kenward_roger, arm=arm, control=design.control, wave=label)


def _kenward_roger_covariance(lik: PatternLikelihood, ev: Evaluation, phi: np.ndarray, w: np.ndarray,
                              p_mats: np.ndarray, *, linear: bool) -> np.ndarray:
    q_mats, r_mats = lik.q_and_r_matrices(ev, second_derivatives=not linear)
    weighted_p = np.einsum("hj,jcd->hcd", w, p_mats)  # sum_j W_hj P_j
    inner = np.einsum("hj,hjab->ab", w, q_mats - 0.25 * r_mats) - np.einsum("hab,bc,hcd->ad", p_mats, phi, weighted_p,
                                                                              optimize=True)
    adj = phi + 2.0 * phi @ inner @ phi
    return 0.5 * (adj + adj.T)


__all__ = ["fit_mmrm", "moment_start"]
