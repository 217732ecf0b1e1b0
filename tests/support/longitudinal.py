"""Random long frames and a hand-built design for the cross-product tests (schemas and analysis)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.longitudinal import DesignSpec


def random_long(rng: np.random.Generator, n_participants: int, offset: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(n_participants):
        arm = rng.choice(["control", "coach", "nudge"])
        base = rng.normal(50, 10)
        sex = rng.choice(["f", "m", "x"])
        for w in ("w1", "w2", "w3"):
            if rng.random() < 0.7:
                rows.append((f"p{i + offset}", arm, w, rng.normal(base, 5), base, rng.normal(), sex))
    return pd.DataFrame(rows, columns=["participant", "arm", "wave", "outcome", "baseline", "age_z", "sex"])


SPEC = DesignSpec(("control", "coach", "nudge"), ("w1", "w2", "w3"), (1.0, 3.0, 6.0),
                  (("age_z", ()), ("sex", ("f", "m", "x"))))


def numpy_design(frame: pd.DataFrame) -> np.ndarray:
    """The design built by hand in numpy, column by column, as the SQL is documented to build it."""
    cols = []
    for w in SPEC.waves:
        cols.append((frame["wave"] == w).to_numpy(float))
    for a in SPEC.treated:
        for w in SPEC.waves:
            cols.append(((frame["arm"] == a) & (frame["wave"] == w)).to_numpy(float))
    cols.append(frame["baseline"].to_numpy(float))
    cols.append(frame["age_z"].to_numpy(float))
    cols += [(frame["sex"] == lev).to_numpy(float) for lev in ("m", "x")]
    return np.column_stack(cols)
