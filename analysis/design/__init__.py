r"""Design-stage simulation: the preregistered plan's operating characteristics before any data exist.

``flourish design STUDY.yaml`` (``flows.design``) asks: with N participants per arm, this attrition, this
covariance and an effect of k minimal important differences, how often does the preregistered primary analysis
reject, how biased and how precise is its estimate, and do its intervals cover? The answer is simulated **through
the plan's own code**: each simulated trial's statistics are handed to ``analysis.plan.fit_primary_mmrm``, the
function ``run_plan`` calls for an MMRM outcome (REML, unstructured covariance, Kenward-Roger), not to a
re-implementation (simr's approach, Green & MacLeod 2016, Methods Ecol Evol 7:493, refits the analysis model to
each simulated data set; DeclareDesign, Blair et al. 2019, APSR 113:838, declares design and answer strategy
once and diagnoses the pair). A test checks the function objects are the plan's.

**Why it is fast.** The MMRM's likelihood needs only per-pattern sufficient statistics (``schemas/mmrm_stats.py``),
so a trial is simulated as statistics, not participants (:mod:`analysis.design.statistics`): per arm and drop-out
pattern, the count is multinomial, the sum of the (baseline, follow-up) vectors normal and their centred
cross-products Wishart (the exact sampling distribution of a multivariate normal sample's sums; Anderson 2003,
*An Introduction to Multivariate Statistical Analysis*, 3rd ed., Thm 3.3.2 and 7.2.2). Cost per trial is then flat in
N: a trial of 100 or of 100,000 participants per arm costs one MMRM fit on a handful of small matrices.

**What is reported** per grid cell (N per arm x attrition x effect): power (rejection in the good direction at the
plan's two-sided alpha, the decision rule's primary success), type I error (any rejection, effect 0), bias, RMSE and
interval coverage of the long-run effect, each with its Monte Carlo SE (Morris, White & Crowther 2019, Stat Med
38:2074, Table 6), and the share of trials whose fit failed, reported apart: a failed fit is never counted as a
non-rejection (nor as a rejection): the rates are over the fits that returned, and the failure rate says how many
did not. :func:`analytic_power` gives the closed-form power of the same contrast with the covariance known.

Modules: :mod:`.statistics` (the generative model and its statistics), :mod:`.analytic` (closed-form power),
:mod:`.engine` (the grid, the divergence-monitor scenarios, the summaries).
"""

from analysis.design.analytic import analytic_power, analytic_se
from analysis.design.engine import (
    CellSummary,
    DesignAssumptions,
    DesignResult,
    MonitorSummary,
    run_design,
    simulate_cell,
    simulate_monitor,
)
from analysis.design.statistics import covariance, draw_mmrm_statistics, pattern_probabilities

__all__ = ["CellSummary", "DesignAssumptions", "DesignResult", "MonitorSummary", "analytic_power", "analytic_se",
           "covariance", "draw_mmrm_statistics", "pattern_probabilities", "run_design", "simulate_cell",
           "simulate_monitor"]
