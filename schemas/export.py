"""JSON Schema export of every contract: what partners validate their landing files against."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.protocol import StudyProtocol
from schemas.records import RECORD_MODELS
from schemas.regulator import regulator_report_schema


def schemas() -> dict[str, dict]:
    """Name -> JSON Schema (draft 2020-12, as pydantic v2 emits it)."""
    out = {"study_protocol": StudyProtocol.model_json_schema(), "regulator_report": regulator_report_schema()}
    for kind, model in RECORD_MODELS.items():
        schema = model.model_json_schema()
        schema["description"] = (
            f"One record of kind '{kind}' (one JSON object per line of a file named {kind}*.jsonl, "
            "or the same columns in CSV/Parquet). Unknown fields are refused; timestamps need a UTC offset."
        )
        out[kind] = schema
    return out


def export_schemas(directory: str | Path) -> list[Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = d / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
