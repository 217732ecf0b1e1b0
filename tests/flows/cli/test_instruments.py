"""`flourish instruments ...`: list, show, score; errors are one sentence and exit code 2."""

import json

from typer.testing import CliRunner

from flows.cli import app as root

runner = CliRunner()


def test_list_json_names_every_instrument():
    res = runner.invoke(root, ["instruments", "list", "--json"])
    assert res.exit_code == 0
    assert {r["name"] for r in json.loads(res.stdout)} >= {"who5", "swls", "perma_profiler", "bpnsfs"}


def test_show_and_score(tmp_path):
    assert "WHO5_1" in runner.invoke(root, ["instruments", "show", "who5"]).stdout
    csv = tmp_path / "r.csv"
    csv.write_text("participant,wave,WHO5_1,WHO5_2,WHO5_3,WHO5_4,WHO5_5\na,1,3,3,3,2,2\n")
    res = runner.invoke(root, ["instruments", "score", "who5", str(csv), "--json"])
    assert res.exit_code == 0
    got = {r["outcome"]: r["value"] for r in json.loads(res.stdout)}
    assert got == {"who5.raw": 13, "who5.percent": 52}


def test_errors_are_one_sentence_exit_2(tmp_path):
    res = runner.invoke(root, ["instruments", "show", "who6"])
    assert res.exit_code == 2 and "unknown instrument 'who6'" in res.output and "Traceback" not in res.output
    csv = tmp_path / "bad.csv"
    csv.write_text("WHO5_1,WHO5_2,WHO5_3,WHO5_4,WHO5_5\n3,3,9,2,2\n")
    res = runner.invoke(root, ["instruments", "score", "who5", str(csv)])
    assert res.exit_code == 2 and "WHO5_3 has value 9" in res.output and "allowed integers 0..5" in res.output
