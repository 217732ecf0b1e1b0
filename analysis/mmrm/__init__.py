r"""The MMRM: mixed model for repeated measures, fitted from pattern sufficient statistics.

The primary model family for longitudinal trials (Mallinckrodt, Lane, Schnell, Peng & Mancuso 2008,
"Recommendations for the primary analysis of continuous endpoints in longitudinal clinical trials",
Drug Inf J 42:303-319): wave-specific means, arm x wave and baseline x wave effects, an unstructured
covariance over the follow-up waves, likelihood-based and so valid under missingness at random. The R
package ``mmrm`` (Sabanes Bove et al., openpharma/mmrm) is the reference implementation; parameterisation,
-2 log L, AIC, Satterthwaite and Kenward-Roger follow it (and through it SAS PROC MIXED).

**Model.** Participant i has covariates z_i (p: intercept, one dummy per non-control arm, baseline,
numeric covariates) and outcomes at the follow-up waves it was observed at, S_i within 1..T:

    y_i = (y_it)_{t in S_i} ~ N( (B z_i)_{S_i}, Sigma_{S_i S_i} ),     vec(B) = M beta,

independently across participants. B (T x p) holds each z-column's coefficient at each wave; the
design (``analysis.mmrm.design``) says which are wave-specific, so M is a fixed T p x q matrix and
X_i = (z_i' (x) E_{S_i}) M is participant i's design matrix (E_S selects the pattern's waves).
Sigma (T x T) is unstructured or one of ``mmrm``'s structures (``analysis.mmrm.covariance``).

**Sufficiency.** Group participants by pattern S. The likelihood (ML and REML) and its gradient depend
on the data only through n_S, Szz_S = sum z z', Szy_S = sum z y', Syy_S = sum y y'
(``schemas/mmrm_stats.py`` derives it, ``analysis/mmrm/likelihood.py`` computes it): one GROUP BY in the
warehouse (``analysis.mmrm.sql``), a few small matrix products per pattern per gradient, whatever the
number of participants. The sandwich covariance needs fourth-order sums per pattern, also there.

**Estimands.** The effect of arm a at wave t is B[t, a] = mean(arm a) - mean(control) at wave t for equal
covariates; the *long-run effect* is the final wave's (``wave="long_run"``).

**Fits.**

- :func:`fit_mmrm` — REML (default) or ML by quasi-Newton with the analytic gradient; model-based,
  sandwich (CR0) and Kenward-Roger covariances; Satterthwaite and KR df (``analysis.mmrm.frequentist``).
- :func:`fit_mmrm_bayes` — the same likelihood in PyMC, LKJ prior on the correlation, half-normal SDs,
  normal fixed effects in baseline-SD units, sampled by nutpie (``analysis.mmrm.bayes``).

Public API::

    MMRMDesign, default_design                           the mean model (z-columns and their terms)
    pattern_statistics_sql(design, source, fourth_order)  SQL text, one GROUP BY per pattern
    pattern_statistics_from_rows(design, rows, ...)      its rows -> schemas.mmrm_stats.MMRMStatistics
    pattern_statistics(con, table, design, ...)          both, on a table or view of an open DuckDB connection
    fit_mmrm(stats, design, structure="us", method="reml", level=0.95, kenward_roger="linear") -> MMRMFit
    fit_mmrm_bayes(stats, design, plan=None, outcome=, direction=, mcid=, rope=, eta=2) -> MMRMPosterior
    MMRMFit.effects / .effect(arm, wave) / .contrast(weights)  ContrastEstimate (model_based, sandwich,
                                                         kenward_roger Inference); .to_effect() -> schemas.results.Effect
    MMRMPosterior.effects / .effect(arm, wave)             schemas.results.Effect rows
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "MMRMDesign": "analysis.mmrm.design",
    "default_design": "analysis.mmrm.design",
    "pattern_statistics_sql": "analysis.mmrm.sql",
    "pattern_statistics_from_rows": "analysis.mmrm.sql",
    "pattern_statistics": "analysis.mmrm.sql",
    "StatisticsInputError": "analysis.mmrm.sql",
    "STRUCTURES": "analysis.mmrm.covariance",
    "fit_mmrm": "analysis.mmrm.frequentist",
    "fit_mmrm_bayes": "analysis.mmrm.bayes",
    "MMRMFit": "analysis.mmrm.results",
    "MMRMPosterior": "analysis.mmrm.results",
    "ContrastEstimate": "analysis.mmrm.results",
    "Inference": "analysis.mmrm.results",
    "MMRMFitError": "analysis.mmrm.results",
    "NotConverged": "analysis.mmrm.results",
    "CovarianceNotPositiveDefinite": "analysis.mmrm.results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # PEP 562, as analysis/__init__.py: importing the package stays cheap
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'analysis.mmrm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
