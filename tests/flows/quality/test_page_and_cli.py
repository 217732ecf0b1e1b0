"""The offline page (parsed: no script, no external reference) and ``flourish quality``."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from flows.quality import load_reports, render_quality_page, run_quality_gates
from schemas.protocol import dump_protocol
from tests.flows.quality.conftest import AS_OF


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def test_the_page_renders_offline_from_stored_results(simulated, tmp_path):
    study, con = simulated
    run_quality_gates(con, study.protocol, run_id="clean", as_of=AS_OF)
    con.execute("UPDATE scores SET value = 300 WHERE outcome = 'who5.raw' AND wave = 'm1'")
    run_quality_gates(con, study.protocol, run_id="bad <run>", as_of=AS_OF, raise_on_critical=False)
    page_path = render_quality_page(load_reports(con, study.protocol.study_id), tmp_path / "q" / "quality.html")

    text = page_path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    assert "http://" not in text and "https://" not in text and "//" not in text.replace("<!DOCTYPE", "")
    assert {"script", "link", "img", "iframe", "object"}.isdisjoint(page.tags)
    assert not [a for a, v in page.attrs if a in ("src", "srcset") or (a == "href" and not str(v).startswith("#"))]
    assert "@import" not in text and "url(" not in text
    body = " ".join(page.text)
    assert "bad <run>" in body and "<run>" not in text  # escaped in the markup, shown as text
    assert body.index("bad <run>") < body.index("clean")  # newest run first
    for r in load_reports(con, study.protocol.study_id)[0].results:
        assert r.name in body
    assert "FAIL" in body and "score_in_range[who5.raw]" in body and "critical" in body


@pytest.fixture
def cli_study(simulated, tmp_path):
    study, con = simulated
    con.close()  # the command opens the warehouse itself
    proto = tmp_path / "study.yaml"
    proto.write_text(dump_protocol(study.protocol))
    return study, proto


def _invoke(*args):
    from flows.cli import app

    return CliRunner().invoke(app, ["quality", *map(str, args)])


def test_cli_clean_run_prints_json_and_writes_the_page(cli_study, tmp_path):
    study, proto = cli_study
    page = tmp_path / "page.html"
    res = _invoke(proto, "--warehouse", study.path, "--json", "--html", page, "--as-of", AS_OF.isoformat())
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verdict"] in ("passed", "passed with warnings") and out["counts"]["critical_failed"] == 0
    assert {e["severity"] for e in out["expectations"]} == {"critical", "warning", "info"}
    assert page.is_file() and out["run_id"] in page.read_text()


def test_cli_critical_failure_exits_2_with_one_sentence(cli_study):
    import duckdb

    study, proto = cli_study
    con = duckdb.connect(str(study.path))
    con.execute("UPDATE scores SET value = -1 WHERE outcome = 'swls.total' AND wave = 'baseline'")
    con.close()
    res = _invoke(proto, "--warehouse", study.path, "--as-of", AS_OF.isoformat())
    assert res.exit_code == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "score_in_range[swls.total]" in errors[0] and "Traceback" not in res.stderr
    assert "FAIL" in res.stdout and "score_in_range[swls.total]" in res.stdout


def test_cli_refuses_a_naive_as_of(cli_study):
    study, proto = cli_study
    res = _invoke(proto, "--warehouse", study.path, "--as-of", "2027-01-01T00:00:00")
    assert res.exit_code == 2 and "UTC offset" in res.stderr
