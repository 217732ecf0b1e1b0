"""``flourish design``: the design-stage simulation of a protocol, its manifest and its power curves.

Thin: reads the protocol, resolves the primary outcome's baseline SD (the design section's ``outcome_sd``, else a
fifth of the instrument's score range, stated as an assumption), runs ``analysis.design.run_design`` and writes

- ``design-manifest.json``: the protocol's preregistration hash, the design section as used, the grid, the seeds,
  the versions of Flourish's code and of the numerical libraries, and every cell's results; a rerun with the same
  inputs gives identical summaries (timings apart, which are kept under ``timing``),
- ``design-power.html`` and ``design-power.vl.json``: the power curves (``reports.design``).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.errors import FlourishError
from schemas.protocol import DesignSettings, StudyProtocol

__all__ = ["DesignRefused", "design_study", "outcome_sd"]

MANIFEST_VERSION = "flourish.design_manifest/1"


class DesignRefused(FlourishError):
    """The protocol cannot be simulated (e.g. no MCID, no MMRM plan)."""


def outcome_sd(protocol: StudyProtocol) -> tuple[float, str]:
    """The primary outcome's baseline SD for the simulation and where it comes from."""
    o = protocol.primary_outcome
    settings = protocol.design or DesignSettings()
    if o.name in settings.outcome_sd:
        return settings.outcome_sd[o.name], "design.outcome_sd"
    if o.lower_bound is not None and o.upper_bound is not None:
        return (o.upper_bound - o.lower_bound) / 5.0, "assumed: a fifth of the outcome's bounds"
    if o.instrument:
        import instruments

        lo, hi = instruments.load(o.instrument).score_range(o.name.split(".", 1)[1])
        return (hi - lo) / 5.0, f"assumed: a fifth of {o.instrument}'s score range {lo:g}..{hi:g}"
    raise DesignRefused(f"the primary outcome {o.name} needs design.outcome_sd (no instrument or bounds give a scale)")


def release_noise(protocol: StudyProtocol, epsilon: float) -> tuple[float, Any, float, float]:
    """The noise SD of each cell of the primary outcome's paired-moments release at a total budget ``epsilon``,
    computed by the release code itself (``privacy.release``: the standard query plan, the budget split, the
    OpenDP calibration), as the share of the budget the release after the final wave spends (its planned share;
    the whole budget when none is planned). Returns (share, noise_sd(arm, wave, statistic), the release's centre,
    the bounds' half-range): the release holds moments of values centred at the bounds' midpoint."""
    from flows.privacy_flows import instrument_bounds
    from privacy.budget import budget_loss
    from privacy.release import calibrate, split_budget, standard_plan

    if protocol.primary_outcome.binary:  # its release is counts (privacy.release.plan_binary_counts), not moments
        raise DesignRefused(f"the primary outcome {protocol.primary_outcome.name} is binary: the design engine's "
                            "public tier simulates the paired-moments release of a continuous outcome, not the counts "
                            "a binary outcome is released as (not supported yet)")
    p = protocol.privacy
    final = protocol.wave_names[-1]
    share = next((r.share for r in p.releases if r.after_wave == final), 1.0)
    accounting = "zcdp" if p.mechanism == "gaussian" else "pure"
    bounds = instrument_bounds(protocol)
    queries = standard_plan(protocol, bounds)
    losses = split_budget(queries, budget_loss(epsilon, p.delta, accounting).scaled(share))
    o = protocol.primary_outcome.name
    (query, loss), = [(q, lo) for q, lo in zip(queries, losses, strict=True)
                      if q.kind == "paired_moments" and q.outcome == o]
    sds = dict(zip(((k.arm, k.wave, k.statistic) for k in query.keys), calibrate(query, p.mechanism, loss).noise_sd(),
                   strict=True))
    b = bounds[o]
    return (share, lambda arm, wave, statistic: sds[(arm, wave, statistic)], float(query.center),
            (b.upper - b.lower) / 2.0)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    from flows.runs import code_version

    out = {"flourish_code_sha256": code_version(), "python": platform.python_version()}
    for lib in ("numpy", "scipy", "altair"):
        out[lib] = version(lib)
    return out


def design_study(study: str | Path, out_dir: str | Path, *, nsim: int | None = None, monitor_nsim: int | None = None,
                 monitor: bool = True, public_nsim: int | None = None, settings: DesignSettings | None = None,
                 public_fit: Callable[..., Any] | None = None,
                 progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Simulate the study's plan over its design grid; write the manifest and the chart; return the manifest."""
    from analysis.design import DesignAssumptions, run_design
    from analysis.errors import AnalysisInputError
    from analysis.prereg import plan_hash
    from flows.study import load_study

    protocol = load_study(study)
    locked_hash = plan_hash(protocol)
    if settings is not None:
        protocol = protocol.model_copy(update={"design": settings})
    sd, sd_source = outcome_sd(protocol)
    mean = _outcome_mid(protocol)
    public = []
    if protocol.privacy is not None:
        eps_grid = (protocol.design.epsilon if protocol.design and protocol.design.epsilon
                    else [protocol.privacy.epsilon * f for f in (0.5, 1.0, 2.0)])
        public = [(eps, *release_noise(protocol, eps)) for eps in eps_grid]  # (eps, share, sd, centre, h)
    try:
        a = DesignAssumptions.of(protocol, sd, mean)
        result = run_design(a, nsim=nsim, monitor_nsim=monitor_nsim, monitor=monitor, public_noise=public,
                            public_nsim=public_nsim, public_fit=public_fit, progress=progress)
    except AnalysisInputError as exc:
        raise DesignRefused(str(exc)) from None
    timing_keys = ("trials_per_second",)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "study_id": protocol.study_id,
        "protocol_hash": locked_hash,
        "design_section": "given on the command line" if settings is not None else
                          ("the protocol's" if protocol.design is not None else "absent: the stated defaults"),
        "primary_outcome": protocol.primary_outcome.name,
        "estimator": "analysis.plan.fit_primary_mmrm (REML MMRM, "
                     f"{protocol.analysis.mmrm_covariance or 'us'} covariance, Kenward-Roger)",
        "alpha": a.alpha,
        "outcome_sd": sd, "outcome_sd_source": sd_source,
        "design": a.settings.model_dump(mode="json"),
        "waves": list(a.waves), "months": list(a.months), "arms": list(a.arms),
        "planned_participants_per_arm": result.planned_participants_per_arm,
        "monitor_needs_participants_per_arm": (a.monitor_n(a.settings.attrition[0])
                                               if protocol.engagement_metrics() else None),
        "nsim": nsim or a.settings.nsim,
        "seed": a.settings.seed,
        "versions": _versions(),
        "notes": list(result.notes),
        "cells": [{k: v for k, v in c.record().items() if k not in timing_keys} for c in result.cells],
        "monitor": [m.record() for m in result.monitor],
        "public": [c.record() for c in result.public],
        "timing": {"seconds": result.seconds, "trials": result.trials,
                   "trials_per_second": result.trials_per_second,
                   "cells": [c.trials_per_second for c in result.cells]},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _finite(manifest)
    (out / "design-manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n",
                                              encoding="utf-8")
    from reports.design import design_chart

    chart = design_chart(manifest["cells"], manifest["public"], study_id=protocol.study_id)
    chart.save(str(out / "design-power.html"))
    (out / "design-power.vl.json").write_text(chart.to_json(), encoding="utf-8")
    return manifest


def _outcome_mid(protocol: StudyProtocol) -> float:
    """The middle of the primary outcome's public bounds: the simulated baseline mean (the DP release clips to the
    bounds and its noise is on their scale; the MMRM does not depend on the mean)."""
    from flows.privacy_flows import instrument_bounds

    b = instrument_bounds(protocol).get(protocol.primary_outcome.name)
    return 0.0 if b is None else (b.lower + b.upper) / 2.0


def _finite(x: Any) -> Any:
    """JSON values: tuples as lists, numpy scalars as Python numbers, NaN (a rate over no fitted trial) as null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and x != x:
        return None
    return x
