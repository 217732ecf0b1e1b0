"""flourish design end to end: the manifest (seeds, versions, grid, protocol hash, results) reproduces its summaries
on a rerun, the chart is written beside it, and a protocol that cannot be simulated is refused in one sentence."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.simulation.field_study import protocol as demo_protocol

DESIGN = {"participants_per_arm": [30], "attrition": [0.2], "effect_mcid_multiples": [0.0, 1.0], "nsim": 3,
          "seed": 7}


@pytest.fixture()
def study(tmp_path):
    data = demo_protocol().model_dump(mode="json", exclude_none=True)
    data["design"] = DESIGN
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_rerun_gives_identical_summaries_and_the_chart_is_written(study, tmp_path):
    from analysis.prereg import plan_hash
    from flows.design import design_study
    from flows.study import load_study

    first = design_study(study, tmp_path / "a", monitor_nsim=2)
    second = design_study(study, tmp_path / "b", monitor_nsim=2)
    assert {k: v for k, v in first.items() if k != "timing"} == {k: v for k, v in second.items() if k != "timing"}
    assert first["protocol_hash"] == plan_hash(load_study(study)) and first["seed"] == 7
    assert [(c["participants_per_arm"], c["effect_mcid_multiple"]) for c in first["cells"]] == [(30, 0.0), (30, 1.0)]
    assert {"numpy", "scipy", "flourish_code_sha256"} <= set(first["versions"])
    assert [m["scenario"] for m in first["monitor"]] == ["divergence", "flourishing unchanged", "final wave suppressed"]
    on_disk = json.loads((tmp_path / "a" / "design-manifest.json").read_text())
    assert on_disk["cells"] == first["cells"]
    assert (tmp_path / "a" / "design-power.html").stat().st_size > 1000
    spec = json.loads((tmp_path / "a" / "design-power.vl.json").read_text())
    assert "vconcat" in spec  # the power curves and the public tier's curves against epsilon
    assert [c["epsilon"] for c in first["public"]] == [2.0, 4.0, 8.0] and first["public"][0]["nsim"] == 3
    other = design_study(study, tmp_path / "c", monitor=False, settings=load_study(study).design.model_copy(
        update={"seed": 8}))
    assert other["cells"] != first["cells"]  # the seed matters (the summaries are not constants)


def test_the_cli_prints_the_grid_and_refuses_in_one_sentence(study, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["design", str(study), "--out", str(tmp_path / "o"), "--nsim", "2", "--no-monitor"])
    assert result.exit_code == 0, result.output
    assert "N/arm" in result.output and "trials/s" in result.output
    data = yaml.safe_load(study.read_text())
    data["analysis"]["effect_shape"] = "constant"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["design", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "MMRM" in result.output and "Traceback" not in result.output


def test_release_noise_comes_from_the_release_code_and_shrinks_with_epsilon():
    """The public tier's noise per cell statistic is what privacy.release calibrates for the final planned release
    (half the demo's budget): the sum of a 0..100 score has 100 times the count's noise SD; a larger epsilon, less."""
    from flows.design import release_noise

    p = demo_protocol()
    share, at4, center, half_range = release_noise(p, 4.0)
    at8 = release_noise(p, 8.0)[1]
    assert share == 0.5 and center == 50.0 and half_range == 50.0  # WHO-5 percent 0..100, released centred
    assert at8("candor", "m3", "n") < at4("candor", "m3", "n")
    assert at8("candor", "m12", "sum_y") < at4("candor", "m12", "sum_y")
    assert at4("control", "m12", "sum_y") < at4("control", "m3", "sum_y")  # the long-run wave gets more of the budget


def test_the_public_tier_runs_the_public_plan_on_cells_with_the_release_noise(study, tmp_path):
    """A stand-in for the sampler (run_public_plan's ``fit``) sees the noised cells with the release's noise SDs;
    its rows become the epsilon curve's power and coverage."""
    from analysis.public import PublicResult
    from analysis.results import Diagnostics
    from flows.design import release_noise
    from schemas.results import LONG_RUN, Effect

    seen = []

    def stand_in(cells, plan, *, control, waves, outcome, direction, mcid, rope):
        seen.append(cells)
        final = waves[-1]
        mean = {a: cells[(a, final)].sum_y / cells[(a, final)].n for a, _ in cells}
        rows = [Effect(outcome=outcome, arm=a, control=control, wave=LONG_RUN, method="bayes_ancova_noise_aware",
                       tier="public", estimate=mean[a] - mean[control], lower=-1e9, upper=1e9,
                       interval_level=0.95, direction=direction) for a in mean if a != control]
        return PublicResult(outcome, control, tuple(mean), tuple(waves), tuple(rows),
                            Diagnostics(True, 1.0, 1000.0, 0), True)

    manifest = __import__("flows.design", fromlist=["x"]).design_study(
        study, tmp_path / "p", nsim=2, monitor=False, public_nsim=3, public_fit=stand_in)
    assert [c["epsilon"] for c in manifest["public"]] == [2.0, 4.0, 8.0]  # half, one and two times privacy.epsilon
    assert len(seen) == 9 and all(c["coverage"] == 1.0 and c["power"] == 0.0 for c in manifest["public"])
    assert seen[0][("guidance", "m12")].center == 50.0  # centred as the release centres
    noise = release_noise(demo_protocol(), 2.0)[1]
    cell = seen[0][("guidance", "m12")]
    assert cell.noise_sd_sum_y == pytest.approx(noise("guidance", "m12", "sum_y"))
    assert manifest["public"][0]["noise_sd_sum_y"] > manifest["public"][2]["noise_sd_sum_y"]
    spec = json.loads((tmp_path / "p" / "design-power.vl.json").read_text())
    assert "vconcat" in spec and "public tier against epsilon" in json.dumps(spec)
