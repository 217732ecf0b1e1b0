"""Flourish analysis: pure statistics over data frames and sufficient statistics.

Importing ``analysis`` is cheap: each public name is imported from its module on first use
(PEP 562 module ``__getattr__``), so ``import analysis`` never pulls in PyMC, scipy or pandas.

Public API (see each module's docstring for the method and its citation)::

    fit_longitudinal, fit_from_crossproducts        analysis.longitudinal   primary Bayesian model
    fit_public                                      analysis.public         noise-aware model on DP releases
    fit_mixedlm, fit_ancova, compare                analysis.frequentist    frequentist cross-checks
    plan_hash, canonical_protocol, next_entry,
    verify_chain, lock_status                       analysis.prereg         preregistration lock
    block_randomize, srm_test, balance_table,
    balance_from_moments                            analysis.randomization
    cuped_effects, cuped_theta                      analysis.cuped          Deng et al. 2013
    fit_surrogate_index, surrogate_index_effects    analysis.surrogate      Athey et al. 2019
    tipping_point, statistics_from_frame,
    statistics_from_moments, statistics_from_cells,
    ancova_effects                                  analysis.missing        delta-adjusted tipping point
    holm, partial_pool,
    subgroup_effects_from_moments                   analysis.multiplicity
    run_plan, run_public_plan, PlanStatistics       analysis.plan           the preregistered plan
    OutcomeSummary, SummaryRow                      analysis.summary        the tidy outcome table
    Effect                                          schemas.results         one effect type for every method
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # core model (owned by the longitudinal-model engineer)
    "fit_longitudinal": "analysis.longitudinal",
    "fit_from_crossproducts": "analysis.longitudinal",
    "LongitudinalResult": "analysis.results",
    "fit_public": "analysis.public",
    "PublicResult": "analysis.public",
    "fit_mixedlm": "analysis.frequentist",
    "fit_ancova": "analysis.frequentist",
    "compare": "analysis.frequentist",
    "Effect": "schemas.results",
    "AnalysisInputError": "analysis.errors",
    "DiagnosticsFailed": "analysis.errors",
    "InsufficientData": "analysis.errors",
    # preregistration
    "plan_hash": "analysis.prereg",
    "canonical_protocol": "analysis.prereg",
    "next_entry": "analysis.prereg",
    "verify_chain": "analysis.prereg",
    "lock_status": "analysis.prereg",
    "RegistryEntry": "analysis.prereg",
    "LockStatus": "analysis.prereg",
    "PreregistrationError": "analysis.prereg",
    # randomization and balance
    "block_randomize": "analysis.randomization",
    "srm_test": "analysis.randomization",
    "balance_table": "analysis.randomization",
    "balance_from_moments": "analysis.randomization",
    "SRMResult": "analysis.randomization",
    # CUPED
    "cuped_effects": "analysis.cuped",
    "cuped_theta": "analysis.cuped",
    "CupedEstimate": "analysis.cuped",
    # surrogate index
    "fit_surrogate_index": "analysis.surrogate",
    "surrogate_index_effects": "analysis.surrogate",
    "SurrogateModel": "analysis.surrogate",
    "SurrogateEffect": "analysis.surrogate",
    "SURROGACY_ASSUMPTIONS": "analysis.surrogate",
    # missing data
    "tipping_point": "analysis.missing",
    "statistics_from_frame": "analysis.missing",
    "statistics_from_moments": "analysis.missing",
    "statistics_from_cells": "analysis.missing",
    "TippingPoint": "analysis.missing",
    "ancova_effects": "analysis.missing",
    # multiplicity and subgroups
    "holm": "analysis.multiplicity",
    "partial_pool": "analysis.multiplicity",
    "subgroup_effects_from_moments": "analysis.multiplicity",
    # the plan
    "run_plan": "analysis.plan",
    "run_public_plan": "analysis.plan",
    "PlanStatistics": "analysis.plan",
    "PlanResult": "analysis.plan",
    # outcome summary
    "OutcomeSummary": "analysis.summary",
    "SummaryRow": "analysis.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
