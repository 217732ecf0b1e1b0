r"""Binary outcomes from counts per arm x wave: risk difference, risk ratio, odds ratio, tests, beta-binomial.

Every function here takes :class:`schemas.binary_stats.BinaryCounts` (n, events) of two cells, or a whole
:class:`~schemas.binary_stats.BinaryCountTable`, and returns frozen results; the counts come from one GROUP BY
(:func:`binary_counts_sql`), never from participant rows in Python. For a treated cell (a events of n1) against
the control cell (c events of n2), b = n1 - a, d = n2 - c, p1 = a / n1, p2 = c / n2, z = the normal quantile of
the interval level:

**Risk difference** p1 - p2 (risk units, e.g. -0.077 = 7.7 percentage points fewer events).

- ``"newcombe"`` (default): Newcombe's hybrid score interval, method 10 of Newcombe (1998), "Interval estimation
  for the difference between independent proportions: comparison of eleven methods", Stat Med 17:873-890. With
  (l_i, u_i) the Wilson (1927, JASA 22:209) score interval of p_i,
  [p1 - p2 - sqrt((p1 - l1)^2 + (u2 - p2)^2),  p1 - p2 + sqrt((u1 - p1)^2 + (p2 - l2)^2)].
  Chosen because its coverage stays near nominal for small n and risks near 0 or 1 where Wald's collapses
  (Newcombe's comparison), it is closed form, and it is defined with a zero cell: the Wilson interval of 0/n is
  [0, z^2 / (n + z^2)], so 0 events in one arm still give a finite, non-degenerate interval. statsmodels'
  ``confint_proportions_2indep(method="newcomb")`` computes the same (the tests compare); Miettinen & Nurminen
  (1985)'s score interval (statsmodels ``method="score"``) is the other good choice, iterative and very close.
- ``"wald"``: p1 - p2 +/- z sqrt(p1 (1 - p1) / n1 + p2 (1 - p2) / n2), for comparison with reports that use it;
  refused when that SE is 0 (every risk 0 or 1), where it would claim a zero-width interval.

**Risk ratio** p1 / p2: Katz, Baptista, Azen & Pike (1978), Biometrics 34:469, the log-scale Wald interval
exp(log RR +/- z sqrt(1/a - 1/n1 + 1/c - 1/n2)) (statsmodels ``Table2x2.riskratio_confint``). Its log is
undefined with a = 0 or c = 0, and with a = n1 and c = n2 the SE is 0.

**Odds ratio** (a d) / (b c): Woolf (1955), Ann Hum Genet 19:251, exp(log OR +/- z sqrt(1/a + 1/b + 1/c + 1/d))
(statsmodels ``Table2x2.oddsratio_confint``). This is also exactly the Wald interval of the arm coefficient of a
logistic regression of the outcome on arm at that wave, which the counts determine completely (the tests fit
statsmodels' GLM on the counts), so "a logistic model on the counts per wave" adds nothing beyond this row. Its
log is undefined when any of a, b, c, d is 0.

**Zero cells.** A ratio whose logarithm is undefined is refused with :class:`ZeroCellRefused` (the reason names
the cell), never reported as 0 or infinity. ``zero_cell="haldane"`` opts in to the Haldane (1956) / Anscombe
(1956) correction: 0.5 is added to all four cells of that table (only of a table with a zero), and the row's
``method`` says so. The risk difference needs no correction (Newcombe handles zeros); the beta-binomial model
needs none either (a proper prior gives a proper posterior). In a per-wave summary a refused measure is recorded
with its reason while the other measures of the row are reported.

**Tests** (two-sided). Pearson's chi-square for the 2 x 2 table *without* continuity correction (Yates' correction
makes the test conservative; D'Agostino, Chase & Belanger 1988, Am Stat 42:198), X^2 = N (a d - b c)^2 /
(n1 n2 (a + c)(b + d)) on 1 df; it is undefined (refused) when nobody or everybody had the event, and the result
reports the smallest expected count so a reader sees when Cochran's (1954) rule (all expected >= 5) fails.
Fisher's exact test conditions on the margins; the two-sided p sums the probabilities of the tables no more likely
than the observed one (scipy's ``fisher_exact``, Agresti 2002, sec. 3.5); it is defined with zero cells.

**Bayesian beta-binomial.** Independent Beta(alpha0, beta0) priors on the two risks (default Beta(1, 1),
uniform; ``prior=(0.5, 0.5)`` is Jeffreys'). The binomial likelihood is conjugate, so each arm's posterior is
exactly Beta(alpha0 + events, beta0 + n - events) (Gelman et al., BDA3, sec. 2.4). P(benefit) = P(p1 < p2 | data)
when the event is harmful (``direction="lower_is_better"``, e.g. pancreatitis, a positive depression screen) or
P(p1 > p2) when it is wanted (``"higher_is_better"``, e.g. responders); it is the integral of f1(x) F2(x) (or of
f1(x) (1 - F2(x))) over [0, 1], computed by adaptive quadrature to about 1e-10, not by sampling. The posterior
mean and SD of the risk difference are closed form; its equal-tailed interval and those of the risk ratio and odds
ratio come from ``draws`` Monte Carlo draws of both posteriors with a fixed ``seed`` (deterministic; with the
default 200,000 draws the Monte Carlo SE of a 95% interval end is about 0.006 posterior SDs).

**Longitudinal binary.** :func:`binary_summary` compares every arm with control at every wave from the same
counts and marks the final wave's rows ``wave="long_run"``. Each per-wave comparison uses the participants
observed at that wave (available cases), which is unbiased for the wave's risk difference when missingness does
not depend on the outcome within an arm (MCAR, or MAR on arm only). It is *not* a likelihood analysis under MAR on
the observed history (the MMRM's property for continuous outcomes): that needs the joint counts of each
participant's response profile over waves, which the per-wave margins do not carry, and so does any model of
the association across waves (a GEE's sandwich for a contrast of waves, a transition model). A GEE with an
independence working correlation and one mean per arm x wave would reproduce these per-wave rows exactly and
add nothing; a GEE is not valid under MAR without weights anyway (Robins, Rotnitzky & Zhao 1995). So no
cross-wave model is offered on these counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysis.errors import AnalysisInputError
from schemas.results import LONG_RUN, Effect
from schemas.binary_stats import BinaryCounts, BinaryCountTable
from schemas.errors import FlourishError
from schemas.sqltext import literal, number
from schemas.suffstats import InsufficientData

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import pandas as pd

Measure = Literal["risk_difference", "risk_ratio", "odds_ratio"]
MEASURES: tuple[str, ...] = ("risk_difference", "risk_ratio", "odds_ratio")
DIRECTIONS: tuple[str, ...] = ("higher_is_better", "lower_is_better")


class ZeroCellRefused(FlourishError, ValueError):
    """A measure or test is undefined for these counts (a zero cell, or no variation); ``reason`` says which
    cell and what to do instead. Raised instead of reporting 0, infinity or a zero-width interval."""

    def __init__(self, measure: str, reason: str):
        self.measure, self.reason = measure, reason
        super().__init__(f"the {measure.replace('_', ' ')} is refused: {reason}")


class BinaryInputError(AnalysisInputError):
    """The source relation breaks the contract of :func:`binary_counts_sql` (counted, never dropped)."""

    def __init__(self, problems: dict[str, int]):
        self.problems = {k: v for k, v in problems.items() if v}
        super().__init__("the binary outcome rows cannot be counted: " + "; ".join(
            f"{n} {what}" for what, n in self.problems.items()))


# ==============================================================================================
# Counting: one GROUP BY
# ==============================================================================================

_PROBLEMS = ("values that are not 0 or 1 (or not finite, with a cut-off)",
             "extra rows for a participant at a wave they already have a row at",
             "participants whose arm is missing, not in the design, or differs between their rows")


def binary_counts_sql(source: str, arms: Sequence[str], waves: Sequence[str], *, cutoff: float | None = None,
                      event_at_or_above: bool = True) -> str:
    """SQL over ``source`` (a table or view name, or a parenthesised sub-query) with columns

        participant   any type; identifies the participant
        arm           the participant's arm (one of ``arms``, the same on every row)
        wave          the wave (rows of other waves are ignored)
        y             the outcome: 0/1 (or boolean) without a ``cutoff``; a number with one; NULL = not observed

    giving one row per observed arm x wave cell: arm index, wave index, n, events, and three problem counts
    (invalid values, duplicate participant x wave rows, participants with a bad arm) that
    :func:`binary_counts_from_rows` refuses. With ``cutoff`` the event is ``y >= cutoff`` (or ``y <= cutoff``
    when ``event_at_or_above`` is False), e.g. PHQ-9 >= 10 or WHO-5 percent <= 50; NaN is invalid, never an event.
    If no row qualifies the query still returns one row (NULL cell columns) carrying the problem counts.
    """
    if cutoff is None:
        valid, event = "v IN (0, 1)", "v = 1"
    else:
        c = number(float(cutoff))
        valid, event = "isfinite(v)", f"isfinite(v) AND v {'>=' if event_at_or_above else '<='} {c}"
    arm_index = "CASE CAST(arm AS VARCHAR) " + " ".join(
        f"WHEN {literal(a)} THEN {k}" for k, a in enumerate(arms)) + " ELSE -1 END"
    wave_index = "CASE CAST(wave AS VARCHAR) " + " ".join(
        f"WHEN {literal(w)} THEN {t}" for t, w in enumerate(waves)) + " END"
    waves_in = ", ".join(literal(w) for w in waves)
    obs = (f"SELECT participant, {arm_index} AS a, {wave_index} AS t, CAST(y AS DOUBLE) AS v FROM {source} "
           f"WHERE y IS NOT NULL AND CAST(wave AS VARCHAR) IN ({waves_in})")
    # duplicates: rows beyond one per observed wave (bit mask of waves, as analysis.mmrm.sql does)
    per = ("SELECT participant, count(*) - bit_count(bit_or(CAST(1 AS BIGINT) << t)) AS dup_rows, "
           "(min(a) < 0 OR min(a) <> max(a)) AS bad_arm FROM obs GROUP BY participant")
    problems = ("SELECT count(*) FILTER (WHERE NOT bad_arm) AS ok, coalesce(sum(dup_rows), 0) AS dup, "
                "count(*) FILTER (WHERE bad_arm) AS bad_arm FROM per")
    invalid = f"SELECT count(*) AS invalid FROM obs WHERE NOT ({valid})"
    cells = (f"SELECT a, t, count(*) AS n, count(*) FILTER (WHERE {event}) AS events FROM obs "
             "WHERE a >= 0 GROUP BY a, t")
    return (f"WITH obs AS ({obs}), per AS ({per}), problems AS ({problems}), invalid AS ({invalid}), "
            f"cells AS ({cells}) "
            "SELECT cells.a, cells.t, cells.n, cells.events, invalid.invalid, problems.dup, problems.bad_arm "
            "FROM problems CROSS JOIN invalid LEFT JOIN cells ON TRUE ORDER BY cells.a, cells.t")


def binary_counts_from_rows(rows: Sequence[Sequence[Any]], arms: Sequence[str], waves: Sequence[str]) -> BinaryCountTable:
    """:class:`BinaryCountTable` from the rows of :func:`binary_counts_sql`; raises :class:`BinaryInputError`
    when any row broke the contract."""
    if not rows:
        raise BinaryInputError({"result rows (the counting query returned nothing)": 1})
    problems = dict(zip(_PROBLEMS, (int(rows[0][4] or 0), int(rows[0][5] or 0), int(rows[0][6] or 0)), strict=True))
    if any(problems.values()):
        raise BinaryInputError(problems)
    cells = {}
    for a, t, n, events, *_ in rows:
        if a is None:
            continue
        cells[(arms[int(a)], waves[int(t)])] = BinaryCounts(int(n), int(events))
    return BinaryCountTable(tuple(arms), tuple(waves), cells)


def binary_counts(con: duckdb.DuckDBPyConnection, source: str, arms: Sequence[str], waves: Sequence[str], *,
                  cutoff: float | None = None, event_at_or_above: bool = True) -> BinaryCountTable:
    """Run :func:`binary_counts_sql` on an open connection and parse the rows (the warehouse path)."""
    sql = binary_counts_sql(source, arms, waves, cutoff=cutoff, event_at_or_above=event_at_or_above)
    return binary_counts_from_rows(con.execute(sql).fetchall(), arms, waves)


def binary_counts_from_frame(frame: pd.DataFrame, arms: Sequence[str], waves: Sequence[str], *, value: str = "y",
                             cutoff: float | None = None, event_at_or_above: bool = True) -> BinaryCountTable:
    """The frame path: the same SQL on the frame in an in-memory DuckDB (columns participant, arm, wave and
    ``value``); rows with a missing value (None, or NaN, which DuckDB reads from pandas as NULL) are not observed."""
    import duckdb

    needed = ["participant", "arm", "wave", value]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise AnalysisInputError(f"the frame lacks columns {absent}; it needs {needed}")
    f = frame[needed].rename(columns={value: "y"}) if value != "y" else frame[needed]
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET threads TO 1")
        con.register("binary_frame", f)
        return binary_counts(con, "binary_frame", arms, waves, cutoff=cutoff, event_at_or_above=event_at_or_above)
    finally:
        con.close()


# ==============================================================================================
# Frequentist measures and tests
# ==============================================================================================


def _z(level: float) -> float:
    from scipy.stats import norm

    if not 0.5 < level < 1:
        raise ValueError(f"the interval level must be in (0.5, 1), got {level}")
    return float(norm.ppf(0.5 + level / 2))


def _need(cell: BinaryCounts, who: str) -> None:
    if type(cell) is not BinaryCounts:
        raise TypeError(f"the {who} cell must be BinaryCounts, got {type(cell).__name__}")
    if cell.n < 1:
        raise InsufficientData(f"a comparison of risks ({who})", 1, cell.n, f"the {who} cell")


def wilson_interval(cell: BinaryCounts, level: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval of one risk, without continuity correction."""
    _need(cell, "one")
    z = _z(level)
    n, x = cell.n, cell.events
    centre = (x + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(x * (n - x) / n + z * z / 4)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class BinaryEffect:
    """One measure (risk difference in risk units, or a ratio) of ``arm`` against ``control`` at ``wave``.

    ``se`` is on the scale the interval is built on: the risk scale for the Wald risk difference, the log scale
    for the ratios, None for Newcombe's interval (which is not estimate +/- z SE). ``zero_cell_correction`` is
    True when 0.5 was added to every cell (``method`` then ends in ``+haldane``).
    """

    measure: str
    arm: str
    control: str
    wave: str
    estimate: float
    lower: float
    upper: float
    interval_level: float
    method: str
    se: float | None = None
    zero_cell_correction: bool = False

    def to_effect(self, outcome: str, direction: str, p_value: float | None = None,
                  n_arm: int | None = None, n_control: int | None = None) -> Effect:
        """The house's effect row for a risk difference (risk units; probabilities None, as for every frequentist
        row). Ratios are not differences in outcome units and have no such row."""
        if self.measure != "risk_difference":
            raise ValueError(f"only a risk difference is an effect row (a difference in outcome units), not {self.measure}")
        sd = self.se if self.se is not None else (self.upper - self.lower) / (2 * _z(self.interval_level))
        return Effect(outcome=outcome, arm=self.arm, control=self.control, wave=self.wave,
                      method=f"risk_difference_{self.method}", estimate=self.estimate, sd=sd, lower=self.lower,
                      upper=self.upper, interval_level=self.interval_level, p_value=p_value, direction=direction,
                      n_arm=n_arm, n_control=n_control)


def risk_difference(treated: BinaryCounts, control: BinaryCounts, *, level: float = 0.95,
                    method: Literal["newcombe", "wald"] = "newcombe", arm: str = "treated",
                    control_name: str = "control", wave: str = "") -> BinaryEffect:
    """p1 - p2 with Newcombe's hybrid score interval (default) or the Wald interval (module docstring)."""
    _need(treated, "treated")
    _need(control, "control")
    p1, p2 = treated.risk, control.risk
    est = p1 - p2
    if method == "newcombe":
        l1, u1 = wilson_interval(treated, level)
        l2, u2 = wilson_interval(control, level)
        lower = est - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        upper = est + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
        return BinaryEffect("risk_difference", arm, control_name, wave, est, lower, upper, level, "newcombe_hybrid_score")
    if method == "wald":
        se = math.sqrt(p1 * (1 - p1) / treated.n + p2 * (1 - p2) / control.n)
        if se == 0:
            raise ZeroCellRefused("risk_difference", f"the Wald SE is 0 (risks {p1:g} and {p2:g}): every participant "
                                  "of each arm had the same outcome; use method='newcombe'")
        z = _z(level)
        return BinaryEffect("risk_difference", arm, control_name, wave, est, est - z * se, est + z * se, level, "wald", se)
    raise ValueError(f"method must be 'newcombe' or 'wald', got {method!r}")


def _table(treated: BinaryCounts, control: BinaryCounts, measure: str, zero_cell: str, zeros_matter: tuple[str, ...]
           ) -> tuple[float, float, float, float, bool]:
    """(a, b, c, d, corrected) with the Haldane-Anscombe 0.5 added when asked and a cell named in
    ``zeros_matter`` is 0; otherwise a refusal naming the zero cells."""
    if zero_cell not in ("refuse", "haldane"):
        raise ValueError(f"zero_cell must be 'refuse' or 'haldane', got {zero_cell!r}")
    cells = {"a": treated.events, "b": treated.non_events, "c": control.events, "d": control.non_events}
    names = {"a": "treated events", "b": "treated non-events", "c": "control events", "d": "control non-events"}
    zeros = [k for k in zeros_matter if cells[k] == 0]
    if not zeros:
        return float(cells["a"]), float(cells["b"]), float(cells["c"]), float(cells["d"]), False
    if zero_cell == "haldane":
        return cells["a"] + 0.5, cells["b"] + 0.5, cells["c"] + 0.5, cells["d"] + 0.5, True
    raise ZeroCellRefused(measure, f"{', '.join(names[k] for k in zeros)} = 0, so its logarithm is undefined; report "
                          "the risk difference (Newcombe) or the beta-binomial posterior, or pass zero_cell='haldane' "
                          "to add 0.5 to every cell (Haldane-Anscombe), labelled as such")


def risk_ratio(treated: BinaryCounts, control: BinaryCounts, *, level: float = 0.95, zero_cell: str = "refuse",
               arm: str = "treated", control_name: str = "control", wave: str = "") -> BinaryEffect:
    """p1 / p2 with the Katz et al. (1978) log-scale interval (module docstring)."""
    _need(treated, "treated")
    _need(control, "control")
    a, b, c, d, corrected = _table(treated, control, "risk_ratio", zero_cell, ("a", "c"))
    n1, n2 = a + b, c + d
    var = 1 / a - 1 / n1 + 1 / c - 1 / n2
    if not var > 0:
        raise ZeroCellRefused("risk_ratio", "every participant in both arms had the event, so the log risk ratio "
                              "has standard error 0; the risk ratio is 1 with no sampling information")
    est = (a / n1) / (c / n2)
    se = math.sqrt(var)
    z = _z(level)
    return BinaryEffect("risk_ratio", arm, control_name, wave, est, est * math.exp(-z * se), est * math.exp(z * se), level,
                        "katz_log" + ("+haldane" if corrected else ""), se, corrected)


def odds_ratio(treated: BinaryCounts, control: BinaryCounts, *, level: float = 0.95, zero_cell: str = "refuse",
               arm: str = "treated", control_name: str = "control", wave: str = "") -> BinaryEffect:
    """(a d) / (b c) with Woolf's (1955) logit interval (module docstring)."""
    _need(treated, "treated")
    _need(control, "control")
    a, b, c, d, corrected = _table(treated, control, "odds_ratio", zero_cell, ("a", "b", "c", "d"))
    est = (a * d) / (b * c)
    se = math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    z = _z(level)
    return BinaryEffect("odds_ratio", arm, control_name, wave, est, est * math.exp(-z * se), est * math.exp(z * se), level,
                        "woolf_logit" + ("+haldane" if corrected else ""), se, corrected)


@dataclass(frozen=True)
class ChiSquareTest:
    """Pearson's chi-square of a 2 x 2 table without continuity correction (1 df). ``expected_min`` is the
    smallest expected count; ``cochran_rule_met`` is False when it is below 5, where the exact test is safer."""

    statistic: float
    df: int
    p_value: float
    expected_min: float
    method: str = "pearson_chi_square_uncorrected"

    @property
    def cochran_rule_met(self) -> bool:
        return self.expected_min >= 5


def pearson_chi_square(treated: BinaryCounts, control: BinaryCounts) -> ChiSquareTest:
    """X^2 = N (a d - b c)^2 / (n1 n2 (a + c)(b + d)); refused when a margin is 0 (module docstring)."""
    from scipy.stats import chi2

    _need(treated, "treated")
    _need(control, "control")
    a, b, c, d = treated.events, treated.non_events, control.events, control.non_events
    n1, n2, m1, m2 = a + b, c + d, a + c, b + d
    if m1 == 0 or m2 == 0:
        what = "nobody" if m1 == 0 else "everybody"
        raise ZeroCellRefused("pearson_chi_square", f"{what} in either arm had the event, so the test statistic is 0/0; "
                              "the data carry no evidence of a difference in risk")
    total = n1 + n2
    stat = total * float(a * d - b * c) ** 2 / (float(n1) * n2 * m1 * m2)
    expected_min = min(n1, n2) * min(m1, m2) / total
    return ChiSquareTest(stat, 1, float(chi2.sf(stat, 1)), expected_min)


@dataclass(frozen=True)
class FisherTest:
    """Fisher's exact test of the 2 x 2 table, conditional on its margins. ``sample_odds_ratio`` is (a d) / (b c)
    as scipy reports it, None when a zero cell makes it 0 or infinite (see :func:`odds_ratio`)."""

    p_value: float
    alternative: str
    sample_odds_ratio: float | None
    method: str = "fisher_exact"


def fisher_exact(treated: BinaryCounts, control: BinaryCounts, *, alternative: str = "two-sided") -> FisherTest:
    """Fisher's exact test (scipy.stats.fisher_exact); defined with zero cells."""
    from scipy import stats

    _need(treated, "treated")
    _need(control, "control")
    table = np.array([[treated.events, treated.non_events], [control.events, control.non_events]])
    res = stats.fisher_exact(table, alternative=alternative)
    ratio = float(res.statistic)
    return FisherTest(float(res.pvalue), alternative, ratio if 0 < ratio < math.inf else None)


# ==============================================================================================
# Per-wave comparisons and the longitudinal summary
# ==============================================================================================


@dataclass(frozen=True)
class BinaryComparison:
    """``arm`` against ``control`` at one wave (``wave == "long_run"``: the final wave) from the two cells' counts.

    A measure that is undefined for these counts is None and its reason is in ``refused`` ((measure, reason)
    pairs); :meth:`measure` raises it as :class:`ZeroCellRefused`.
    """

    outcome: str
    arm: str
    control: str
    wave: str
    treated_counts: BinaryCounts
    control_counts: BinaryCounts
    interval_level: float
    direction: str
    risk_difference: BinaryEffect
    risk_ratio: BinaryEffect | None
    odds_ratio: BinaryEffect | None
    chi_square: ChiSquareTest | None
    fisher: FisherTest
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def risk_treated(self) -> float:
        return self.treated_counts.risk

    @property
    def risk_control(self) -> float:
        return self.control_counts.risk

    def measure(self, name: str) -> Any:
        if name not in (*MEASURES, "chi_square"):
            raise KeyError(f"unknown measure {name!r}; one of {(*MEASURES, 'chi_square')}")
        value = getattr(self, name)
        if value is None:
            raise ZeroCellRefused(name, dict(self.refused)[name])
        return value


def compare_arms(treated: BinaryCounts, control: BinaryCounts, *, outcome: str = "outcome", arm: str = "treated",
                 control_name: str = "control", wave: str = "", direction: str = "lower_is_better", level: float = 0.95,
                 rd_method: Literal["newcombe", "wald"] = "newcombe", zero_cell: str = "refuse") -> BinaryComparison:
    """Every measure and test of one arm against control at one wave; refused measures carry their reason."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    names = {"arm": arm, "control_name": control_name, "wave": wave}
    refused: list[tuple[str, str]] = []

    def attempt(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ZeroCellRefused as err:
            refused.append((name, err.reason))
            return None

    rd = risk_difference(treated, control, level=level, method=rd_method, **names)
    rr = attempt("risk_ratio", risk_ratio, treated, control, level=level, zero_cell=zero_cell, **names)
    odds = attempt("odds_ratio", odds_ratio, treated, control, level=level, zero_cell=zero_cell, **names)
    chi = attempt("chi_square", pearson_chi_square, treated, control)
    return BinaryComparison(outcome, arm, control_name, wave, treated, control, level, direction, rd, rr, odds, chi,
                            fisher_exact(treated, control), tuple(refused))


@dataclass(frozen=True)
class BinarySummary:
    """Every non-control arm against control at every wave, plus the long-run (final-wave) rows."""

    outcome: str
    direction: str
    control: str
    arms: tuple[str, ...]
    waves: tuple[str, ...]
    comparisons: tuple[BinaryComparison, ...]
    interval_level: float
    note: str = ("per-wave available-case comparisons from counts: unbiased under MCAR (or MAR on arm only); "
                 "not a likelihood analysis under MAR on the observed history")

    def comparison(self, arm: str, wave: str = LONG_RUN) -> BinaryComparison:
        for c in self.comparisons:
            if c.arm == arm and c.wave == wave:
                return c
        raise KeyError(f"no comparison for arm {arm!r} at wave {wave!r}")

    def frame(self) -> pd.DataFrame:
        """One row per comparison: counts, risks, each measure's estimate and interval, the tests, refusals."""
        import pandas as pd

        rows = []
        for c in self.comparisons:
            row: dict[str, Any] = {"outcome": c.outcome, "arm": c.arm, "control": c.control, "wave": c.wave,
                                   "n_treated": c.treated_counts.n, "events_treated": c.treated_counts.events,
                                   "n_control": c.control_counts.n, "events_control": c.control_counts.events,
                                   "risk_treated": c.risk_treated, "risk_control": c.risk_control,
                                   "interval_level": c.interval_level}
            for m in MEASURES:
                e = getattr(c, m)
                row |= {f"{m}": e.estimate if e else None, f"{m}_lower": e.lower if e else None,
                        f"{m}_upper": e.upper if e else None, f"{m}_method": e.method if e else None}
            row["chi_square"] = c.chi_square.statistic if c.chi_square else None
            row["chi_square_p"] = c.chi_square.p_value if c.chi_square else None
            row["fisher_p"] = c.fisher.p_value
            row["refused"] = "; ".join(f"{m}: {r}" for m, r in c.refused)
            rows.append(row)
        return pd.DataFrame(rows)


def binary_summary(table: BinaryCountTable, *, outcome: str, direction: str = "lower_is_better", level: float = 0.95,
                   waves: Sequence[str] | None = None, rd_method: Literal["newcombe", "wald"] = "newcombe",
                   zero_cell: str = "refuse") -> BinarySummary:
    """Per-wave comparisons of every arm with control from one table (module docstring: what they estimate).

    ``waves`` restricts to waves that have closed (default: all the table's waves); the last of them gives the
    ``long_run`` rows. A cell without participants raises :class:`InsufficientData` naming it."""
    use = tuple(table.waves if waves is None else waves)
    unknown = [w for w in use if w not in table.waves]
    if unknown or not use:
        raise AnalysisInputError(f"waves {list(use)} must be a non-empty subset of the table's {table.waves}")
    out = []
    for arm in table.treated:
        for w in use:
            for cell, who in ((table.cell(arm, w), arm), (table.cell(table.control, w), table.control)):
                if cell.n < 1:
                    raise InsufficientData(f"the comparison of {arm!r} with {table.control!r}", 1, 0,
                                           f"arm {who!r} at wave {w!r} (no participant observed)")
            kw = dict(outcome=outcome, arm=arm, control_name=table.control, direction=direction, level=level,
                      rd_method=rd_method, zero_cell=zero_cell)
            out.append(compare_arms(table.cell(arm, w), table.cell(table.control, w), wave=w, **kw))
        last = use[-1]
        out.append(compare_arms(table.cell(arm, last), table.cell(table.control, last), wave=LONG_RUN, **kw))
    return BinarySummary(outcome, direction, table.control, table.arms, use, tuple(out), level)


# ==============================================================================================
# Bayesian beta-binomial (conjugate, exact)
# ==============================================================================================


@dataclass(frozen=True)
class BetaPosterior:
    """Beta(alpha, beta) posterior of one arm's risk, with its mean and equal-tailed interval."""

    alpha: float
    beta: float
    mean: float
    lower: float
    upper: float


@dataclass(frozen=True)
class PosteriorSummary:
    """Posterior mean, median, SD and equal-tailed interval of a derived quantity."""

    mean: float
    median: float
    sd: float
    lower: float
    upper: float


@dataclass(frozen=True)
class BinaryPosterior:
    """The beta-binomial posterior of ``arm`` against ``control`` at one wave.

    ``p_benefit`` is exact (quadrature); the intervals of the risk difference, risk ratio and odds ratio come from
    ``draws`` seeded Monte Carlo draws (the risk difference's mean and SD are closed form). ``p_above_mcid`` is
    P(benefit larger than ``mcid`` risk units) and ``p_in_rope`` P(|risk difference| < ``rope``), None without them.
    """

    outcome: str
    arm: str
    control: str
    wave: str
    direction: str
    interval_level: float
    prior: tuple[float, float]
    risk_treated: BetaPosterior
    risk_control: BetaPosterior
    risk_difference: PosteriorSummary
    risk_ratio: PosteriorSummary
    odds_ratio: PosteriorSummary
    p_benefit: float
    p_above_mcid: float | None
    p_in_rope: float | None
    draws: int
    seed: int
    method: str = field(default="beta_binomial_conjugate")

    def to_effect(self) -> Effect:
        """The house's effect row: the risk difference (risk units) with the decision probabilities."""
        rd = self.risk_difference
        return Effect(outcome=self.outcome, arm=self.arm, control=self.control, wave=self.wave, method=self.method,
                      estimate=rd.mean, sd=rd.sd, lower=rd.lower, upper=rd.upper, interval_level=self.interval_level,
                      p_benefit=self.p_benefit, p_above_mcid=self.p_above_mcid, p_in_rope=self.p_in_rope,
                      direction=self.direction)


def probability_first_below(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X1 < X2) for independent X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2): the integral of f1(x) (1 - F2(x)) over
    [0, 1], by adaptive quadrature over the central range of X1 (outside it f1 has mass below 1e-14)."""
    from scipy import integrate
    from scipy.stats import beta

    lo, hi = beta.ppf([1e-15, 1 - 1e-15], a1, b1)
    mid = beta.ppf([0.01, 0.1, 0.5, 0.9, 0.99], a1, b1)
    value, _ = integrate.quad(lambda x: beta.pdf(x, a1, b1) * beta.sf(x, a2, b2), float(lo), float(hi),
                              points=sorted(set(map(float, mid))), limit=400, epsabs=1e-13, epsrel=1e-11)
    return float(min(1.0, max(0.0, value)))


def beta_binomial(treated: BinaryCounts, control: BinaryCounts, *, outcome: str = "outcome", arm: str = "treated",
                  control_name: str = "control", wave: str = "", direction: str = "lower_is_better", level: float = 0.95,
                  prior: tuple[float, float] = (1.0, 1.0), mcid: float | None = None, rope: float | None = None,
                  draws: int = 200_000, seed: int = 20261122) -> BinaryPosterior:
    """Conjugate posterior of both risks and of their difference, ratio and odds ratio (module docstring)."""
    from scipy.stats import beta as beta_dist

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    a0, b0 = (float(v) for v in prior)
    if not (a0 > 0 and b0 > 0 and math.isfinite(a0) and math.isfinite(b0)):
        raise ValueError(f"the Beta prior needs alpha, beta > 0 (a proper prior), got {prior}")
    if draws < 10_000:
        raise ValueError(f"draws must be at least 10,000 for stable interval ends, got {draws}")
    for name, v in (("mcid", mcid), ("rope", rope)):
        if v is not None and not (0 < v < 1):
            raise ValueError(f"{name} is in risk units and must be in (0, 1), got {v}")
    _z(level)
    _need(treated, "treated")  # a cell nobody reached would return the prior as if it were a result
    _need(control, "control")
    tail = (1 - level) / 2

    def arm_posterior(cell: BinaryCounts) -> BetaPosterior:
        a, b = a0 + cell.events, b0 + cell.non_events
        lo, hi = beta_dist.ppf([tail, 1 - tail], a, b)
        return BetaPosterior(a, b, a / (a + b), float(lo), float(hi))

    post_t, post_c = arm_posterior(treated), arm_posterior(control)
    rng = np.random.default_rng(seed)
    p1 = rng.beta(post_t.alpha, post_t.beta, draws)
    p2 = rng.beta(post_c.alpha, post_c.beta, draws)

    def summary(x: np.ndarray, mean: float | None = None, sd: float | None = None) -> PosteriorSummary:
        lo, med, hi = np.quantile(x, [tail, 0.5, 1 - tail])
        return PosteriorSummary(float(x.mean()) if mean is None else mean, float(med),
                                float(x.std(ddof=1)) if sd is None else sd, float(lo), float(hi))

    def beta_var(p: BetaPosterior) -> float:
        s = p.alpha + p.beta
        return p.alpha * p.beta / (s * s * (s + 1))

    rd = p1 - p2
    rd_summary = summary(rd, post_t.mean - post_c.mean, math.sqrt(beta_var(post_t) + beta_var(post_c)))
    # ratios of draws: a Beta draw is > 0 and < 1 in floating point for these parameters (alpha, beta >= the prior's),
    # but guard the rare underflow honestly rather than divide by zero
    tiny = np.finfo(float).tiny
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rr = p1 / np.maximum(p2, tiny)
        odds = (p1 / np.maximum(1 - p1, tiny)) / np.maximum(p2 / np.maximum(1 - p2, tiny), tiny)
    if not (np.all(np.isfinite(rr)) and np.all(np.isfinite(odds))):
        raise ZeroCellRefused("risk_ratio", "posterior draws of a risk underflowed to 0 or 1; the ratio's posterior "
                              "is not representable; report the risk difference")
    below = probability_first_below(post_t.alpha, post_t.beta, post_c.alpha, post_c.beta)
    p_benefit = below if direction == "lower_is_better" else 1.0 - below
    benefit = -rd if direction == "lower_is_better" else rd
    p_mcid = float(np.mean(benefit > mcid)) if mcid is not None else None
    p_rope = float(np.mean(np.abs(rd) < rope)) if rope is not None else None
    return BinaryPosterior(outcome, arm, control_name, wave, direction, level, (a0, b0), post_t, post_c, rd_summary,
                           summary(rr), summary(odds), p_benefit, p_mcid, p_rope, draws, seed)


def beta_binomial_effects(table: BinaryCountTable, *, outcome: str, direction: str = "lower_is_better",
                          level: float = 0.95, prior: tuple[float, float] = (1.0, 1.0), mcid: float | None = None,
                          rope: float | None = None, draws: int = 200_000, seed: int = 20261122,
                          waves: Sequence[str] | None = None) -> tuple[BinaryPosterior, ...]:
    """The beta-binomial posterior of every arm against control at every wave (``waves``, default all) plus the
    long-run (final-wave) rows, each with the same seed (so a row is reproducible on its own)."""
    use = tuple(table.waves if waves is None else waves)
    if not use or any(w not in table.waves for w in use):
        raise AnalysisInputError(f"waves {list(use)} must be a non-empty subset of the table's {table.waves}")
    kw = dict(outcome=outcome, control_name=table.control, direction=direction, level=level, prior=prior, mcid=mcid,
              rope=rope, draws=draws, seed=seed)
    out = []
    for arm in table.treated:
        for w in (*use, LONG_RUN):
            cell_wave = use[-1] if w == LONG_RUN else w
            out.append(beta_binomial(table.cell(arm, cell_wave), table.cell(table.control, cell_wave), arm=arm,
                                     wave=w, **kw))
    return tuple(out)


__all__ = [
    "MEASURES",
    "BetaPosterior",
    "BinaryComparison",
    "BinaryEffect",
    "BinaryInputError",
    "BinaryPosterior",
    "BinarySummary",
    "ChiSquareTest",
    "FisherTest",
    "PosteriorSummary",
    "ZeroCellRefused",
    "beta_binomial",
    "beta_binomial_effects",
    "binary_counts",
    "binary_counts_from_frame",
    "binary_counts_from_rows",
    "binary_counts_sql",
    "binary_summary",
    "compare_arms",
    "fisher_exact",
    "odds_ratio",
    "pearson_chi_square",
    "probability_first_below",
    "risk_difference",
    "risk_ratio",
    "wilson_interval",
]
