"""A realistic simulated field study: landing files, its protocol and the truth it was drawn from.

Design (all vectorized with numpy; deterministic for a seed):
- Three arms 1:1:1 (control; ``guidance`` = consented guidance toward the user's own goals;
  ``candor`` = anti-sycophancy), permuted blocks of 6 within two strata.
- Waves at baseline, 2 weeks, 1, 3, 6 and 12 months with WHO-5, SWLS, Flourishing Scale, PHQ-2.
- Latent wellbeing per wave W = sqrt(.6) trait + sqrt(.4) occasion noise + arm effect, with the
  arm effect growing then plateauing: plateau * (1 - exp(-months / 1.5)) scaled by the person's
  engagement (so early telemetry predicts the long-run benefit: a usable surrogate).
  Plateaus in latent-SD units: guidance 0.25, candor 0.12 (published chatbot RCTs: d ~ 0-0.3).
- Each instrument's factor correlates with W (WHO-5 .9, SWLS .85, FS .85, PHQ-2 -.75); items
  load .75 on their factor and are rounded and clipped to the response scale, so item and score
  distributions are bounded and skewed like real ones.
- Monotone attrition rising over time (about 30% missing by 12 months), more likely with a low
  *observed* baseline WHO-5 (missing at random given baseline) and slightly less in treated arms;
  3% intermittent wave skips; 1% skipped items; about 2% withdraw consent mid-study.
- Telemetry: weekly session counts decay from a personal rate driven by engagement; each session
  has a start, 1+ messages, feature exposures in treated arms, and an end.
- ``truth.json``: true population (intention-to-treat) effects of each arm vs control on each
  outcome at each wave, by Monte Carlo with common random numbers (400k draws), and the long-run
  (final wave) effect.
- ``--bad-rows F`` injects each kind of bad input the ingest must quarantine (count per kind =
  max(1, F x rows of the target file)), at random positions, and writes ``injected.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.protocol import StudyProtocol, dump_protocol
from schemas.sqltext import literal

STUDY_ID = "flourish-sim"
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
WAVES = [("baseline", 0, 7), ("w2", 14, 4), ("m1", 30, 7), ("m3", 91, 10), ("m6", 182, 14), ("m12", 365, 21)]
ARMS = [("control", None, 0.0), ("guidance", "consented_guidance", 0.25), ("candor", "anti_sycophancy", 0.12)]
RATE_MONTHS = 1.5
OFFSETS = np.array([-300, -240, 0, 60, 120, 330, 540])  # participant time zones, minutes from UTC
# the IANA zone of each offset (its standard time; the timestamps' offsets stay fixed, the instants are what count)
ZONES = np.array(["America/New_York", "America/Halifax", "Europe/London", "Europe/Berlin", "Europe/Helsinki",
                  "Asia/Kolkata", "Asia/Tokyo"])
LATE_SHARE = 0.04  # of answers at a follow-up wave, given after the prompt's window closed (and its grace)
MOVE_SHARE = 0.03  # of participants, who move to another time zone from the third follow-up wave on
GRACE_HOURS = 24.0


def response_window(day: int, window: int) -> tuple[int, float]:
    """``(opens_day, expires_after_hours)`` of a wave's declared window: it opens (local midnight) a day before the
    earliest simulated answer and expires a day after the latest, counted from the prompt's scheduled time (the
    opening day, at the participant's time of assignment), so only the answers made late on purpose fall outside."""
    opens_day = 0 if day == 0 else day - int(np.ceil(window / 2)) - 1
    return opens_day, float((day + window - opens_day + 1) * 24)


@dataclass(frozen=True)
class InstrumentModel:
    name: str
    items: tuple[str, ...]
    lo: int
    hi: int
    center: float
    spread: float
    factor_corr: float


INSTRUMENTS = [
    InstrumentModel("who5", tuple(f"WHO5_{i}" for i in range(1, 6)), 0, 5, 2.9, 1.25, 0.9),
    InstrumentModel("swls", tuple(f"SWLS_{i}" for i in range(1, 6)), 1, 7, 4.6, 1.45, 0.85),
    InstrumentModel("flourishing_scale", tuple(f"FS_{i}" for i in range(1, 9)), 1, 7, 5.2, 1.1, 0.85),
    InstrumentModel("phq2", ("PHQ_1", "PHQ_2"), 0, 3, 0.75, 0.85, -0.75),
]
LOADING = 0.75
OUTCOMES = {  # outcome -> (instrument, transform of the item sum)
    "who5.percent": ("who5", 4.0),
    "who5.raw": ("who5", 1.0),
    "swls.total": ("swls", 1.0),
    "flourishing_scale.total": ("flourishing_scale", 1.0),
    "phq2.total": ("phq2", 1.0),
}


def protocol(epsilon: float = 4.0) -> StudyProtocol:
    return StudyProtocol.model_validate({
        "study_id": STUDY_ID,
        "title": "Simulated field study: consented guidance and anti-sycophancy vs standard assistant",
        "intended_use": "research",
        "arms": [
            {"name": "control", "allocation": 1, "control": True, "description": "standard assistant"},
            {"name": "guidance", "allocation": 1, "features": {"consented_guidance": True},
             "description": "consented guidance toward the user's own goals"},
            {"name": "candor", "allocation": 1, "features": {"anti_sycophancy": True},
             "description": "anti-sycophancy"},
        ],
        "waves": [
            {"name": n, "day": d, "window_days": w, "instruments": [i.name for i in INSTRUMENTS],
             "response_window": {"opens_day": response_window(d, w)[0], "opens_at": "00:00",
                                 "expires_after_hours": response_window(d, w)[1], "grace_hours": GRACE_HOURS}}
            for n, d, w in WAVES
        ],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m12",
                            "direction": "higher_is_better", "mcid": 10.0, "rope": 2.0},
        "secondary_outcomes": [
            {"name": "swls.total", "instrument": "swls", "wave": "m12", "mcid": 3.0},
            {"name": "flourishing_scale.total", "instrument": "flourishing_scale", "wave": "m12", "mcid": 3.0},
            {"name": "phq2.total", "instrument": "phq2", "wave": "m12", "direction": "lower_is_better", "mcid": 1.0},
        ],
        "surrogates": [
            {"name": "sessions_per_week_first_4w", "event_type": "session_start", "statistic": "count_per_week",
             "window_days": 28, "lower_bound": 0, "upper_bound": 21},
            {"name": "feature_exposures_first_4w", "event_type": "feature_exposure", "statistic": "count",
             "window_days": 28, "lower_bound": 0, "upper_bound": 100},
        ],
        "privacy": {"epsilon": epsilon, "delta": 1e-6, "unit": "participant", "min_cell_size": 10,
                    "mechanism": "gaussian",
                    # two planned releases (an interim at 3 months, the long run at 12), a fifth of the budget
                    # left for a privacy officer's ad hoc release
                    "releases": [{"after_wave": "m3", "share": 0.3}, {"after_wave": "m12", "share": 0.5}]},
        "analysis": {"effect_shape": "per_wave", "time_trend": "per_wave"},
        "strata": ["site"],
    })


# -- the generative model --------------------------------------------------------------------

def _effect(plateau: float, day: int) -> float:
    return plateau * (1.0 - np.exp(-(day / 30.4375) / RATE_MONTHS))


def _items(rng: np.random.Generator, inst: InstrumentModel, w: np.ndarray, noise_u=None, noise_v=None) -> np.ndarray:
    """Integer item answers (n x k) for latent wellbeing ``w``."""
    n, k = len(w), len(inst.items)
    v = rng.standard_normal(n) if noise_v is None else noise_v
    f = inst.factor_corr * w + np.sqrt(1 - inst.factor_corr**2) * v
    u = rng.standard_normal((n, k)) if noise_u is None else noise_u
    cont = inst.center + inst.spread * (LOADING * f[:, None] + np.sqrt(1 - LOADING**2) * u)
    return np.clip(np.rint(cont), inst.lo, inst.hi).astype(np.int64)


def truth(draws: int = 400_000, seed: int = 7) -> dict:
    """True ITT effects (arm minus control) per outcome and wave, with common random numbers."""
    rng = np.random.default_rng(seed)
    trait = rng.standard_normal(draws)
    engage = 0.3 * trait + np.sqrt(1 - 0.09) * rng.standard_normal(draws)
    mult = _multiplier(engage)
    out: dict = {"arms": {}, "baseline_sd": {}, "note": "population ITT effects in outcome units; "
                 "d = effect / SD of the outcome at baseline"}
    per_wave: dict[str, dict[str, dict[str, float]]] = {}
    for wave, day, _ in WAVES:
        occ = rng.standard_normal(draws)
        w0 = np.sqrt(0.6) * trait + np.sqrt(0.4) * occ
        noise = {i.name: (rng.standard_normal((draws, len(i.items))), rng.standard_normal(draws)) for i in INSTRUMENTS}
        base_scores = {}
        for oname, (iname, factor) in OUTCOMES.items():
            inst = next(i for i in INSTRUMENTS if i.name == iname)
            base_scores[oname] = factor * _items(rng, inst, w0, *noise[iname]).sum(axis=1)
            if wave == "baseline":
                out["baseline_sd"][oname] = float(base_scores[oname].std(ddof=1))
        for arm, _, plateau in ARMS[1:]:
            w1 = w0 + _effect(plateau, day) * mult
            for oname, (iname, factor) in OUTCOMES.items():
                inst = next(i for i in INSTRUMENTS if i.name == iname)
                s1 = factor * _items(rng, inst, w1, *noise[iname]).sum(axis=1)
                per_wave.setdefault(arm, {}).setdefault(oname, {})[wave] = float((s1 - base_scores[oname]).mean())
    final = WAVES[-1][0]
    for arm, feature, plateau in ARMS[1:]:
        out["arms"][arm] = {
            "feature": feature,
            "latent_plateau_sd_units": plateau,
            "rate_months": RATE_MONTHS,
            "effects": per_wave[arm],
            "long_run": {o: per_wave[arm][o][final] for o in OUTCOMES},
            "long_run_d": {o: per_wave[arm][o][final] / out["baseline_sd"][o] for o in OUTCOMES},
        }
    out["control"] = "control"
    out["long_run_wave"] = final
    return out


def _multiplier(engage: np.ndarray) -> np.ndarray:
    """How strongly a person responds to a feature; mean 1, higher with engagement."""
    # E[max(0, 1 + Z/2)] = (2 Phi(2) + phi(2)) / 2 = 1.004245 for Z ~ N(0, 1): normalizes the mean to 1
    return np.clip(1.0 + 0.5 * engage, 0.0, None) / 1.004245


def _ids(rng: np.random.Generator, n: int, prefix: str) -> np.ndarray:
    raw = rng.integers(0, 2**63 - 1, size=(n, 2), dtype=np.int64)
    return np.array([f"{prefix}{a:016x}{b:016x}"[: len(prefix) + 24] for a, b in raw])


def _iso(ts_utc: np.ndarray, offset_min: np.ndarray) -> np.ndarray:
    """ISO 8601 local time with the participant's UTC offset, e.g. 2026-01-05T09:30:00+05:30."""
    if ts_utc.size == 0:  # numpy's string functions cannot reduce an empty array (a study without withdrawals)
        return np.array([], dtype=str)
    local = ts_utc + offset_min.astype("timedelta64[m]")
    text = np.datetime_as_string(local.astype("datetime64[s]"), unit="s")
    sign = np.where(offset_min < 0, "-", "+")
    hh = np.char.zfill((np.abs(offset_min) // 60).astype(str), 2)
    mm = np.char.zfill((np.abs(offset_min) % 60).astype(str), 2)
    return np.char.add(np.char.add(np.char.add(np.char.add(text, sign), hh), ":"), mm)


def simulate(out: str | Path, participants: int, seed: int, bad_rows: float = 0.0, formats: str = "jsonl",
             truth_draws: int = 400_000) -> dict:
    """Write landing/ files, study.yaml and truth.json under ``out``; return a summary."""
    if participants < 6:
        raise ValueError("simulate needs at least 6 participants (one randomization block)")
    if not 0.0 <= bad_rows < 0.5:
        raise ValueError("--bad-rows must be a fraction in [0, 0.5)")
    out = Path(out)
    land = out / "landing"
    land.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = participants

    pid = _ids(rng, n, "u-")
    offset = rng.choice(OFFSETS, size=n)
    site = rng.choice(np.array(["north", "south"]), size=n)
    # permuted blocks of 6 within site
    arm_idx = np.empty(n, dtype=np.int64)
    for s in ("north", "south"):
        idx = np.flatnonzero(site == s)
        blocks = int(np.ceil(len(idx) / 6))
        seq = np.concatenate([rng.permutation(np.repeat(np.arange(3), 2)) for _ in range(blocks)])
        arm_idx[idx] = seq[: len(idx)]
    arm_names = np.array([a[0] for a in ARMS])
    assigned = np.datetime64(START.replace(tzinfo=None), "s") + (rng.uniform(0, 60 * 86400, n)).astype("timedelta64[s]")
    granted = assigned - rng.uniform(600, 3 * 86400, n).astype("timedelta64[s]")

    # consent scopes: 93% all, 4% no telemetry, 3% no aggregate release
    u = rng.uniform(size=n)
    has_telemetry = u >= 0.04
    scopes = np.where(u < 0.04, '["surveys","aggregate_release"]',
                      np.where(u < 0.07, '["telemetry","surveys"]', '["telemetry","surveys","linkage","aggregate_release"]'))
    withdraw = rng.uniform(size=n) < 0.02
    withdraw_day = rng.uniform(20, 330, n)
    withdrawn_at = assigned + (withdraw_day * 86400).astype("timedelta64[s]")

    trait = rng.standard_normal(n)
    engage = 0.3 * trait + np.sqrt(1 - 0.09) * rng.standard_normal(n)
    mult = _multiplier(engage)
    plateau = np.array([a[2] for a in ARMS])[arm_idx]

    # prompt timing draws from a stream of its own, so the answers and telemetry of a seed are what they were
    prng = np.random.default_rng([seed, 17])
    zone_idx = np.searchsorted(np.sort(OFFSETS), offset)  # OFFSETS is sorted
    moved_zone = (zone_idx + prng.integers(1, len(ZONES), n)) % len(ZONES)
    moves = prng.uniform(size=n) < MOVE_SHARE
    prompt_lines: dict[str, list[str]] = {}
    late_by_wave: dict[str, int] = {}

    # responses wave by wave
    resp_cols: dict[str, list] = {k: [] for k in ("response_id", "participant_id", "instrument", "wave", "submitted_at", "items")}
    present = np.ones(n, dtype=bool)  # still in the study (monotone dropout)
    baseline_who5 = None
    missing_by_wave = {}
    for wi, (wave, day, window) in enumerate(WAVES):
        occ = rng.standard_normal(n)
        w = np.sqrt(0.6) * trait + np.sqrt(0.4) * occ + _effect(1.0, day) * plateau * mult
        when = assigned + ((day + rng.uniform(-window / 2 if day else 0, window, n)) * 86400).astype("timedelta64[s]")
        if wi > 0:
            z = (baseline_who5 - baseline_who5.mean()) / (baseline_who5.std() + 1e-9)
            hazard = np.array([0, 0.05, 0.04, 0.07, 0.07, 0.09])[wi] * np.exp(-0.45 * z - 0.15 * (arm_idx > 0))
            present &= rng.uniform(size=n) >= hazard
        responds = present & (rng.uniform(size=n) >= (0.03 if wi else 0.0))
        responds &= ~(withdraw & (when >= withdrawn_at))
        missing_by_wave[wave] = float(1 - responds.mean())
        when, late_by_wave[wave] = _prompts(prng, prompt_lines, wave, wi, day, window, pid, offset, assigned, when,
                                            responds, withdraw, withdrawn_at, np.where(moves & (wi >= 3), moved_zone,
                                                                                       zone_idx))
        who = np.flatnonzero(responds)
        for inst in INSTRUMENTS:
            answers = _items(rng, inst, w[who])
            if wave == "baseline" and inst.name == "who5":
                full = np.zeros(n)
                full[who] = answers.sum(axis=1)
                baseline_who5 = full
            skip = rng.uniform(size=answers.shape) < 0.01
            items_json = _items_json(inst.items, answers, skip)
            resp_cols["response_id"].append(_ids(rng, len(who), "r-"))
            resp_cols["participant_id"].append(pid[who])
            resp_cols["instrument"].append(np.full(len(who), inst.name))
            resp_cols["wave"].append(np.full(len(who), wave))
            resp_cols["submitted_at"].append(_iso(when[who] + rng.integers(0, 600, len(who)).astype("timedelta64[s]"), offset[who]))
            resp_cols["items"].append(items_json)
    responses = {k: np.concatenate(v) for k, v in resp_cols.items()}

    # telemetry
    ev = _events(rng, n, pid, offset, arm_idx, assigned, engage, has_telemetry, withdraw, withdrawn_at, present)

    # ---- write files ----
    consent_rows = {
        "participant_id": pid, "consent_version": np.full(n, "2026.1"), "scopes_json": scopes,
        "granted_at": _iso(granted, offset), "withdrawn_at": np.full(n, None, dtype=object),
    }
    wd = np.flatnonzero(withdraw)
    consent_rows_w = {
        "participant_id": pid[wd], "consent_version": np.full(len(wd), "2026.1"), "scopes_json": scopes[wd],
        "granted_at": _iso(granted[wd], offset[wd]), "withdrawn_at": _iso(withdrawn_at[wd], offset[wd]),
    }
    files: dict[str, list[str]] = {}
    files["consents.jsonl"] = _consent_lines(consent_rows) + _consent_lines(consent_rows_w)
    assign_lines = [
        json.dumps({"participant_id": p, "study_id": STUDY_ID, "arm": a, "assigned_at": t, "stratum": s})
        for p, a, t, s in zip(pid, arm_names[arm_idx], _iso(assigned, offset), site)
    ]
    files["assignments.jsonl"] = assign_lines
    by_wave: dict[str, list[str]] = {}
    for rid, p, inst, wave, ts, items in zip(responses["response_id"], responses["participant_id"], responses["instrument"],
                                             responses["wave"], responses["submitted_at"], responses["items"]):
        by_wave.setdefault(wave, []).append(
            '{"response_id":"%s","participant_id":"%s","study_id":"%s","instrument":"%s","instrument_version":"1",'
            '"wave":"%s","submitted_at":"%s","items":%s}' % (rid, p, STUDY_ID, inst, wave, ts, items))
    for wave, lines in by_wave.items():
        files[f"responses-{wave}.jsonl"] = lines
    for wave, lines in prompt_lines.items():
        files[f"prompts-{wave}.jsonl"] = lines

    injected: dict[str, int] = {}
    if bad_rows > 0:
        injected = _inject(rng, files, bad_rows, pid, offset, has_telemetry, withdraw, withdrawn_at, assigned)

    for name, lines in files.items():
        (land / name).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    n_events = _write_events(land, ev, formats)
    if formats == "mixed":
        _rewrite_as_csv(land / "assignments.jsonl")

    (out / "study.yaml").write_text(dump_protocol(protocol()), encoding="utf-8")
    t = truth(draws=truth_draws)
    t["seed"] = seed
    t["participants"] = n
    t["missing_fraction_by_wave"] = missing_by_wave
    t["late_answers_by_wave"] = late_by_wave
    (out / "truth.json").write_text(json.dumps(t, indent=2), encoding="utf-8")
    (out / "injected.json").write_text(json.dumps(injected, indent=2, sort_keys=True), encoding="utf-8")
    return {"participants": n, "responses": int(len(responses["response_id"])), "events": n_events,
            "injected": injected, "landing": str(land)}


def _prompts(prng, out: dict[str, list[str]], wave: str, wi: int, day: int, window: int, pid, offset, assigned, when,
             responds, withdraw, withdrawn_at, zone_idx, late_share: float = LATE_SHARE,
             study_id: str = STUDY_ID) -> tuple[np.ndarray, int]:
    """One wave-level prompt per participant still consenting when it is scheduled (non-responders included: theirs
    expire), written to ``out[wave]``; returns the answer times with the late answers moved past the window, and how
    many participants answered late. A late answer's prompt expired before it was completed (allowed)."""
    opens_day, expiry_h = response_window(day, window)
    s = np.timedelta64(1, "s")
    scheduled = assigned + np.int64(opens_day * 86400) * s
    closes = scheduled + np.int64(round((expiry_h + GRACE_HOURS) * 3600)) * s
    late = responds & ~withdraw & (prng.uniform(size=len(pid)) < (late_share if wi else 0.0))
    when = np.where(late, closes + prng.integers(3600, 3 * 86400, len(pid)) * s, when)
    keep = ~(withdraw & (scheduled >= withdrawn_at))
    sent = scheduled + prng.integers(0, 600, len(pid)) * s
    opened = np.maximum(when - np.int64(60) * s, sent)
    started = opened + np.int64(30) * s
    completed = np.maximum(when + np.int64(600) * s, started)  # the answers' own jitter is under 600 s
    expired = scheduled + np.int64(round(expiry_h * 3600)) * s
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return when, int(late.sum())

    def ts(values: np.ndarray, present: np.ndarray) -> np.ndarray:
        text = np.char.add(np.char.add('"', _iso(values[idx], offset[idx])), '"')
        return np.where(present[idx], text, "null")

    answered = responds
    fields = [
        ("scheduled_at", ts(scheduled, np.ones(len(pid), bool))), ("sent_at", ts(sent, np.ones(len(pid), bool))),
        ("opened_at", ts(opened, answered)), ("started_at", ts(started, answered)),
        ("completed_at", ts(completed, answered)), ("expired_at", ts(expired, ~answered | late)),
    ]
    # the partner's own prompt id, by wave and its row for the participant: a well-behaved partner builds no id from
    # the participant's raw id (the ingest would replace it by the pseudonym and count the row)
    head = np.char.add(np.char.add(f'{{"prompt_id":"q-{wave}-', idx.astype(str)), '","participant_id":"')
    line = np.char.add(np.char.add(head, pid[idx]), f'","study_id":"{study_id}","wave":"{wave}","schedule_version":"2026.1"')
    for name, text in fields:
        line = np.char.add(np.char.add(line, f',"{name}":'), text)
    line = np.char.add(np.char.add(np.char.add(line, ',"timezone":"'), ZONES[zone_idx[idx]]), '"}')
    out[wave] = line.tolist()
    return when, int(late.sum())


def _items_json(codes: tuple[str, ...], answers: np.ndarray, skip: np.ndarray) -> np.ndarray:
    text = answers.astype(str).astype(object)
    text[skip] = "null"
    parts = [np.char.add(f'"{c}":', text[:, j].astype(str)) for j, c in enumerate(codes)]
    joined = parts[0]
    for p in parts[1:]:
        joined = np.char.add(np.char.add(joined, ","), p)
    return np.char.add(np.char.add("{", joined), "}")


def _consent_lines(rows: dict) -> list[str]:
    out = []
    for p, v, s, g, w in zip(rows["participant_id"], rows["consent_version"], rows["scopes_json"], rows["granted_at"],
                             rows["withdrawn_at"]):
        wtxt = "null" if w is None else f'"{w}"'
        out.append('{"participant_id":"%s","consent_version":"%s","scopes":%s,"granted_at":"%s","withdrawn_at":%s}'
                   % (p, v, s, g, wtxt))
    return out


def _events(rng, n, pid, offset, arm_idx, assigned, engage, has_telemetry, withdraw, withdrawn_at, present_end):
    """Sessions per week decay from a personal rate; each session: start, messages, exposures, end."""
    weeks = 52
    base = np.exp(0.45 * engage + 0.35)  # sessions/week in week 1 (median ~1.4)
    decay = np.exp(-np.arange(weeks) / 16.0)
    lam = base[:, None] * (0.25 + 0.75 * decay[None, :])
    lam *= has_telemetry[:, None]
    counts = rng.poisson(lam)
    p_idx, week = np.nonzero(counts)
    reps = counts[p_idx, week]
    s_part = np.repeat(p_idx, reps)
    s_week = np.repeat(week, reps)
    start = assigned[s_part] + ((s_week * 7 + rng.uniform(0, 7, len(s_part))) * 86400).astype("timedelta64[s]")
    keep = ~(withdraw[s_part] & (start >= withdrawn_at[s_part] - np.timedelta64(3600, "s")))
    s_part, start = s_part[keep], start[keep]
    n_sess = len(s_part)
    n_msg = 1 + rng.poisson(2.5, n_sess)
    treated = arm_idx[s_part] > 0
    exposed = treated & (rng.uniform(size=n_sess) < 0.55)
    feature_names = np.array([a[1] or "" for a in ARMS])[arm_idx[s_part]]
    per_session = 2 + n_msg + exposed
    sess_of_event = np.repeat(np.arange(n_sess), per_session)
    pos = np.arange(len(sess_of_event)) - np.repeat(np.cumsum(per_session) - per_session, per_session)
    last = pos == per_session[sess_of_event] - 1
    etype = np.where(pos == 0, "session_start", np.where(last, "session_end", "message"))
    is_exposure_slot = exposed[sess_of_event] & (pos == 1)
    etype = np.where(is_exposure_slot, "feature_exposure", etype)
    ts = start[sess_of_event] + (pos * 45 + rng.integers(0, 30, len(pos))).astype("timedelta64[s]")
    value = np.where(etype == "message", rng.poisson(40, len(pos)).astype(float), np.nan)
    feature = np.where(etype == "feature_exposure", feature_names[sess_of_event], None)
    part = s_part[sess_of_event]
    return {
        "participant_id": pid[part], "ts": _iso(ts, offset[part]), "ts_utc": ts,
        "session_id": np.char.add("s-", (sess_of_event + 1).astype(str)), "type": etype, "feature": feature, "value": value,
    }


def _write_events(land: Path, ev: dict, formats: str) -> int:
    import duckdb

    n = len(ev["participant_id"])
    event_id = np.char.add("e-", np.arange(1, n + 1).astype(str))
    month = np.datetime_as_string(ev["ts_utc"].astype("datetime64[M]"), unit="M")
    table = pa.table({
        "event_id": pa.array(event_id), "participant_id": pa.array(ev["participant_id"]),
        "study_id": pa.array(np.full(n, STUDY_ID)), "ts": pa.array(ev["ts"]), "session_id": pa.array(ev["session_id"]),
        "type": pa.array(ev["type"]), "feature": pa.array(ev["feature"], pa.string()),
        "value": pa.array(ev["value"], pa.float64(), from_pandas=True), "month": pa.array(month),
    })
    con = duckdb.connect()
    con.register("ev", table)
    months = sorted(set(month.tolist()))
    for i, m in enumerate(months):
        rows = f"SELECT * EXCLUDE (month) FROM ev WHERE month = {literal(m)}"
        if formats == "mixed" and i % 3 == 2:
            con.execute(f"COPY ({rows}) TO {literal(land / f'events-{m}.parquet')} (FORMAT PARQUET)")
        else:
            con.execute(f"COPY ({rows}) TO {literal(land / f'events-{m}.jsonl')} (FORMAT JSON)")
    # bad event lines prepared by _inject live in events-bad.jsonl, interleaved with a clean month
    con.close()
    return n


def _rewrite_as_csv(path: Path) -> None:
    import csv

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.with_suffix(".csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["participant_id", "study_id", "arm", "assigned_at", "stratum"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    path.unlink()


def _inject(rng, files, fraction, pid, offset, has_telemetry, withdraw, withdrawn_at, assigned) -> dict[str, int]:
    """Insert each kind of bad row at random positions; return expected quarantine counts per reason."""
    resp_name = "responses-m1.jsonl"
    resp = files[resp_name]
    k = max(1, int(round(fraction * len(resp))))
    good = json.loads(resp[0])
    bad: dict[str, list[str]] = {}

    def variant(i: int, **changes) -> str:
        r = dict(good)
        r["response_id"] = f"bad-{i}-{rng.integers(1 << 30)}"
        r.update(changes)
        return json.dumps(r)

    bad["malformed_json"] = [variant(i)[: -7] for i in range(k)]
    bad["schema_violation"] = [json.dumps({kk: vv for kk, vv in json.loads(variant(i)).items() if kk != "wave"}) for i in range(k)]
    bad["naive_timestamp"] = [variant(i, submitted_at=good["submitted_at"][:19]) for i in range(k)]
    bad["unknown_study"] = [variant(i, study_id="another-study") for i in range(k)]
    bad["unknown_instrument"] = [variant(i, instrument="wemwbs") for i in range(k)]
    bad["unknown_wave"] = [variant(i, wave="m24") for i in range(k)]
    bad["out_of_range"] = [variant(i, items={**good["items"], next(iter(good["items"])): 9}) for i in range(k)]
    bad["unknown_item"] = [variant(i, items={**good["items"], "XYZ_9": 1}) for i in range(k)]
    # a repeat of a kept participant's response: a withdrawing participant's rows are all discarded at the batch's
    # end and are no key for a repeat (flows/ingest/gate.stored_keys), so their repeat is erased, not a duplicate
    leaving = {str(p) for p in pid[withdraw]}
    kept = [j for j, line in enumerate(resp) if json.loads(line)["participant_id"] not in leaving]
    bad["duplicate"] = [resp[kept[int(j)]] for j in rng.integers(0, len(kept), k)]
    extra_events: list[str] = []
    counts = {r: len(v) for r, v in bad.items()}

    def late_events(reason: str, who: np.ndarray, after: np.ndarray, tag: str) -> None:
        """k message events, each a day after ``after`` for a participant of ``who``: expected as ``reason``."""
        if not len(who):
            return
        for i in range(k):
            j = int(who[i % len(who)])
            ts = _iso(after[j:j + 1] + np.timedelta64(86400, "s"), offset[j:j + 1])[0]
            extra_events.append(json.dumps({"event_id": f"bad-{tag}-{i}", "participant_id": str(pid[j]),
                                            "study_id": STUDY_ID, "ts": str(ts), "session_id": "s-x", "type": "message"}))
        counts[reason] = k

    late_events("no_consent", np.flatnonzero(~has_telemetry), assigned, "nc")  # no telemetry scope
    late_events("withdrawn", np.flatnonzero(withdraw & has_telemetry), withdrawn_at, "wd")  # after withdrawal
    files["events-late.jsonl"] = extra_events
    all_bad = [line for lines in bad.values() for line in lines]
    positions = np.sort(rng.integers(0, len(resp) + 1, len(all_bad)))
    merged = list(resp)
    for offset_i, (p, line) in enumerate(zip(positions, all_bad)):
        merged.insert(int(p) + offset_i, line)
    # blank lines are skipped and not counted
    for p in rng.integers(0, len(merged), 3):
        merged.insert(int(p), "")
    files[resp_name] = merged
    # one unknown arm among assignments, for a participant not otherwise in the study
    files["assignments.jsonl"].append(json.dumps({"participant_id": "u-not-enrolled", "study_id": STUDY_ID, "arm": "placebo",
                                                  "assigned_at": "2026-01-10T10:00:00+00:00"}))
    counts["unknown_arm"] = 1
    return counts
