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
    assert "layer" in spec
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
