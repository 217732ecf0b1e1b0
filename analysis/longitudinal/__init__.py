"""The primary model: a Bayesian Gaussian random-intercept (optionally random-slope) model fitted to
cross-products that DuckDB computes with GROUP BY, so its cost does not grow with participants.

The package has one concern a module:

- :mod:`~analysis.longitudinal.design`: the design (:class:`DesignSpec`), the SQL text of its sufficient
  statistics and the parser of what that SQL returns, and the same statistics in numpy for a frame;
- :mod:`~analysis.longitudinal.likelihood`: the marginal likelihood in numpy (the algebra is in its
  docstring) and the maximum-likelihood fits used for checks against published fits;
- :mod:`~analysis.longitudinal.model`: the PyMC model on standardised statistics, its priors and its
  compile cache;
- :mod:`~analysis.longitudinal.summarise`: the posterior in outcome units;
- this module, the two ways in: :func:`fit_from_crossproducts` (statistics, the warehouse path) and
  :func:`fit_longitudinal` (a long frame).

Nothing here opens a connection: ``flows.statistics`` runs the SQL on the warehouse and hands the
statistics over.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.longitudinal.design import (
    DesignColumn,
    DesignSpec,
    LongitudinalStats,
    analysis_frame,
    crossproducts_from_frame,
    crossproducts_sql,
    design_spec_from_frame,
    slope_groups_sql,
    stats_from_rows,
)
from analysis.longitudinal.likelihood import (
    MLFit,
    MLFitSlopes,
    constrain,
    marginal_loglik,
    marginal_loglik_slopes,
    ml_fit,
    ml_fit_slopes,
    plan_constraint,
)
from analysis.longitudinal.model import Standardisation, compiled_model, model_data, standardise
from analysis.longitudinal.summarise import OutcomeTerms, summarise
from analysis.results import LongitudinalResult
from schemas.protocol import AnalysisPlan, Outcome, StudyProtocol, Wave

__all__ = [
    "DesignColumn",
    "DesignSpec",
    "LongitudinalStats",
    "MLFit",
    "MLFitSlopes",
    "OutcomeTerms",
    "Standardisation",
    "analysis_frame",
    "constrain",
    "crossproducts_from_frame",
    "crossproducts_sql",
    "design_spec_from_frame",
    "fit_from_crossproducts",
    "fit_longitudinal",
    "marginal_loglik",
    "marginal_loglik_slopes",
    "ml_fit",
    "ml_fit_slopes",
    "plan_constraint",
    "slope_groups_sql",
    "stats_from_rows",
]


def _check_threads() -> None:
    # BLAS threads inside each gradient evaluation slow sampling several-fold on small machines
    # (research/stack.md); they must be limited before numpy loads, so we can only warn here.
    if os.environ.get("OPENBLAS_NUM_THREADS") is None and os.environ.get("OMP_NUM_THREADS") is None:
        import warnings

        warnings.warn(
            "OMP_NUM_THREADS / OPENBLAS_NUM_THREADS are not set; set them to 1 before Python starts for fast sampling",
            RuntimeWarning,
            stacklevel=3,
        )


def fit_from_crossproducts(
    stats: LongitudinalStats,
    plan: AnalysisPlan,
    *,
    outcome: str = "outcome",
    direction: str = "higher_is_better",
    mcid: float | None = None,
    rope: float | None = None,
    progress_bar: bool = False,
) -> LongitudinalResult:
    """Fit the primary model to sufficient statistics (the CLI/warehouse path).

    Returns a result whose diagnostics may have failed; check ``result.confirmatory`` or call
    ``result.require_passed()`` before reporting it as confirmatory."""
    import nutpie

    if direction not in ("higher_is_better", "lower_is_better"):
        raise AnalysisInputError(f"direction must be higher_is_better or lower_is_better, got {direction!r}")
    _check_threads()
    spec = stats.spec
    if plan.random_slopes:
        if len(set(spec.months)) < 2:
            raise AnalysisInputError("random slopes need at least two follow-up waves at different months; "
                                     "set random_slopes: false")
        if not any(g.rows_per_participant >= 3 for g in stats.cross.slope_groups):
            raise AnalysisInputError("random slopes need participants observed at three or more follow-up waves "
                                     "(otherwise slope and residual variance are not separable); set random_slopes: false")
    std = standardise(stats)
    data = model_data(std.cross, spec, plan)
    intercepts = any(g.rows_per_participant > 1 for g in stats.cross.groups)
    compiled = compiled_model(spec, plan, data, intercepts)
    t0 = time.perf_counter()
    idata = nutpie.sample(
        compiled, draws=plan.draws, tune=plan.tune, chains=plan.chains, seed=plan.seed,
        progress_bar=progress_bar, cores=min(plan.chains, os.cpu_count() or 1),
    )
    seconds = time.perf_counter() - t0
    return summarise(idata, stats=stats, plan=plan, standardisation=std,
                     outcome=OutcomeTerms(outcome, direction, mcid, rope), sampling_seconds=seconds)

def _resolve_waves(waves: Sequence[Wave] | Mapping[str, float] | None, frame: pd.DataFrame, baseline_wave: str | None) -> dict[str, float]:
    if waves is None:
        vals = pd.unique(frame["wave"])
        try:
            return {str(v): float(v) for v in vals}
        except (TypeError, ValueError):
            raise AnalysisInputError(
                "waves must be given (protocol Waves or a mapping wave -> months) when the wave column is not numeric months"
            ) from None
    if isinstance(waves, Mapping):
        out = {str(k): float(v) for k, v in waves.items()}
    else:
        out = {w.name: w.months for w in waves}
    if baseline_wave is not None:
        out.pop(baseline_wave, None)
    return out


def fit_longitudinal(
    frame: pd.DataFrame,
    plan: AnalysisPlan | StudyProtocol,
    *,
    outcome: str | Outcome | None = None,
    direction: str | None = None,
    mcid: float | None = None,
    rope: float | None = None,
    control: str | None = None,
    waves: Sequence[Wave] | Mapping[str, float] | None = None,
    value: str = "outcome",
    progress_bar: bool = False,
) -> LongitudinalResult:
    """Fit the preregistered primary model to a long frame.

    ``frame`` has one row per participant x follow-up wave with columns ``participant, arm, wave,
    outcome`` (the value; another name via ``value=``), ``baseline`` and the plan's covariates.
    ``plan`` is an :class:`AnalysisPlan`, or a whole :class:`StudyProtocol` (then the primary
    outcome, its direction/MCID/ROPE, the control arm and the waves come from it). ``waves`` gives
    each follow-up wave's months since assignment (protocol Waves or a mapping); the baseline wave
    is excluded. The frame is reduced to cross-products in numpy (:func:`crossproducts_from_frame`, tested
    equal to the warehouse's SQL on the same rows), then :func:`fit_from_crossproducts` runs.
    """
    if isinstance(plan, StudyProtocol):
        protocol = plan
        plan = protocol.analysis
        out_obj = outcome if isinstance(outcome, Outcome) else protocol.outcome(outcome) if outcome else protocol.primary_outcome
        control = control or protocol.control_arm
        waves = waves if waves is not None else [w for w in protocol.waves if w.name != protocol.baseline_wave]
        outcome = out_obj
    if isinstance(outcome, Outcome):
        direction = direction or outcome.direction
        mcid = mcid if mcid is not None else outcome.mcid
        rope = rope if rope is not None else outcome.rope
        outcome = outcome.name
    outcome = outcome or value
    direction = direction or "higher_is_better"
    if control is None:
        raise AnalysisInputError("name the control arm (control=...) or pass the StudyProtocol as the plan")
    wave_months = _resolve_waves(waves, frame, plan.baseline_wave)
    spec = design_spec_from_frame(frame, control=control, waves=wave_months, covariates=plan.covariates)
    stats = crossproducts_from_frame(frame, spec, value=value, slopes=plan.random_slopes)
    return fit_from_crossproducts(stats, plan, outcome=outcome, direction=direction, mcid=mcid, rope=rope, progress_bar=progress_bar)
