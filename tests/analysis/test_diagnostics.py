"""The convergence gate (analysis.results.Diagnostics): what it gates, and that it prints nothing."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np


def _idata(chains: int, draws: int = 200, seed: int = 0, diverging: int = 0):
    import arviz as az

    rng = np.random.default_rng(seed)
    posterior = {"beta": rng.normal(size=(chains, draws, 2)), "sigma": np.exp(rng.normal(size=(chains, draws)))}
    div = np.zeros((chains, draws), dtype=bool)
    div.flat[:diverging] = True
    return az.from_dict(posterior=posterior, sample_stats={"diverging": div})


PLAN = SimpleNamespace(rhat_max=1.01, ess_bulk_min=100)


def test_one_chain_is_gated_on_ess_and_divergences_and_logs_no_shape_warning(caplog, capfd):
    """R-hat needs two chains; with one, ArviZ's summary logged "Shape validation failed" on every fit, which
    reached the CLI's stderr (issue 17: no library noise in normal output)."""
    from analysis.results import Diagnostics

    with caplog.at_level(logging.DEBUG):
        d = Diagnostics.of(_idata(1), ["beta", "sigma"], PLAN)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert capfd.readouterr().err == ""  # ArviZ's logger has its own handler on stderr
    assert d.passed and np.isnan(d.rhat_max) and d.ess_bulk_min > 100
    failed = Diagnostics.of(_idata(1, draws=40, diverging=3), ["beta", "sigma"], PLAN)
    assert not failed.passed
    assert any("bulk ESS" in r for r in failed.reasons) and any("3 divergent" in r for r in failed.reasons)


def test_several_chains_are_gated_on_rhat_too():
    from analysis.results import Diagnostics

    idata = _idata(4)
    d = Diagnostics.of(idata, ["beta", "sigma"], PLAN)
    assert d.passed and 0.99 < d.rhat_max < 1.01 and round(d.rhat_max, 2) != d.rhat_max  # unrounded
    shifted = _idata(4)
    shifted.posterior["sigma"][0] += 10.0  # one chain elsewhere
    bad = Diagnostics.of(shifted, ["beta", "sigma"], PLAN)
    assert not bad.passed and any("R-hat" in r and "sigma" in r for r in bad.reasons)
