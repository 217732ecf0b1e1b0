"""When a study's pipeline runs: wave closes, planned releases, and the deployments ``flourish serve`` creates.

Times are computed in the study's IANA time zone (``protocol.schedule.timezone``) and stored and compared in UTC.
A wave closes when the window of the last participant who can be randomised has ended: the end of enrolment
plus the wave's day offset plus its window, at the protocol's ``wave_close_time`` (local). A study without a
schedule is run on demand: every wave counts as closed when ``flourish run`` is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.protocol import ReleasePlan, StudyProtocol


@dataclass(frozen=True)
class WaveClose:
    wave: str
    closes_at: datetime | None  # UTC; None for an on-demand study (closed whenever the pipeline runs)

    def closed(self, now: datetime) -> bool:
        return self.closes_at is None or self.closes_at <= now


def wave_closes(protocol: StudyProtocol) -> list[WaveClose]:
    """Each wave's closing instant (UTC), in protocol order."""
    schedule = protocol.schedule
    if schedule is None:
        return [WaveClose(w.name, None) for w in protocol.waves]
    tz = ZoneInfo(schedule.timezone)
    out = []
    for w in protocol.waves:
        local_day = schedule.enrolment_end + timedelta(days=w.day + w.window_days)
        local = datetime.combine(local_day, schedule.wave_close_time, tzinfo=tz)
        out.append(WaveClose(w.name, local.astimezone(UTC)))
    return out


def closed_waves(protocol: StudyProtocol, now: datetime) -> list[str]:
    """The waves whose windows have closed by ``now`` (an aware datetime)."""
    return [c.wave for c in wave_closes(protocol) if c.closed(now)]


def release_id(protocol: StudyProtocol, plan_hash: str, planned: ReleasePlan) -> str:
    """The unique key of a planned release: the same study, plan and planned entry always give the same id, so a
    rerun of the pipeline finds the release made and spends nothing."""
    import hashlib

    digest = hashlib.sha256(f"{protocol.study_id}\0{plan_hash}\0{planned.after_wave}\0{planned.share!r}".encode())
    return f"rel-{digest.hexdigest()[:16]}"


def due_releases(protocol: StudyProtocol, now: datetime) -> list[ReleasePlan]:
    """Planned releases whose wave has closed by ``now``."""
    closed = set(closed_waves(protocol, now))
    return [r for r in protocol.planned_releases() if r.after_wave in closed]


# ------------------------------------------------------------------------------------------------------------
# The deployments `flourish serve` creates


@dataclass(frozen=True)
class PlannedDeployment:
    """One Prefect deployment of the study: what it runs, on which schedule, in which time zone."""

    name: str
    purpose: str
    kind: str                       # nightly_ingest | wave_close | weekly_report
    cron: str | None                # a cron schedule (local time), or
    rrule: str | None               # a one-off RRULE (a wave's close)
    timezone: str
    parameters: dict
    due_now: bool = False           # a wave that closed while nobody was serving: run at once (late-run policy)

    def next_runs(self, now: datetime, n: int = 3) -> list[datetime]:
        """The next ``n`` run times after ``now`` (aware, in the study's time zone), as Prefect's scheduler computes
        them (its cron and rrule schedules, with their daylight-saving rules)."""
        import asyncio

        from prefect.server.schemas.schedules import CronSchedule, RRuleSchedule

        schedule = (CronSchedule(cron=self.cron, timezone=self.timezone) if self.cron is not None
                    else RRuleSchedule(rrule=self.rrule, timezone=self.timezone))
        tz = ZoneInfo(self.timezone)
        return [d.astimezone(tz) for d in asyncio.run(schedule.get_dates(n=n, start=now))]


def late_runs_to_make(policy: str, missed: list[datetime]) -> list[datetime]:
    """Which of the runs a schedule missed (while nobody served it) to make when serving resumes: the latest only
    (``latest_only``: a nightly ingest or report refresh covers everything before it), or every one
    (``every_missed``). Prefect has no such option (PrefectHQ/prefect#15886); the scheduled flow applies this."""
    ordered = sorted(missed)
    if not ordered:
        return []
    return ordered[-1:] if policy == "latest_only" else ordered


def planned_deployments(protocol: StudyProtocol, *, study: str, landing: str, warehouse: str,
                        key_file: str | None, now: datetime, waves_run: set[str] | frozenset = frozenset()
                        ) -> list[PlannedDeployment]:
    """The study's deployments: a nightly ingest of the landing folder (ingest, score, quality), a wave-close run
    for each wave still to close (analysis and the planned releases of that wave), and a weekly report refresh.

    A wave that has closed and has had no wave-close run (``waves_run``) is due now; with ``late_runs:
    latest_only`` only the latest such wave is (its analysis covers the earlier waves' data too)."""
    schedule = protocol.schedule
    if schedule is None:
        from schemas.errors import FlourishError

        raise FlourishError(f"study protocol {protocol.study_id} declares no schedule: add a `schedule:` section "
                            "(timezone, enrolment_start, enrolment_end) to serve it, or run it with `flourish run`")
    base = {"study": study, "landing": landing, "warehouse": warehouse, "key_file": key_file}
    sid = protocol.study_id
    out = [PlannedDeployment(f"{sid}-nightly-ingest", "ingest the landing folder, score, check data quality",
                             "nightly_ingest", schedule.nightly_ingest, None, schedule.timezone,
                             base | {"kind": "nightly_ingest", "wave": None, "late_runs": schedule.late_runs})]
    closed_unrun = [c for c in wave_closes(protocol) if c.closed(now) and c.wave not in waves_run]
    catch_up = {c.wave for c in closed_unrun}
    if schedule.late_runs == "latest_only" and closed_unrun:
        catch_up = {closed_unrun[-1].wave}
    for c in wave_closes(protocol):
        if c.closes_at is None or (c.closed(now) and c.wave not in catch_up):
            continue
        local = c.closes_at.astimezone(ZoneInfo(schedule.timezone))
        rrule = f"DTSTART:{local:%Y%m%dT%H%M%S}\nRRULE:FREQ=DAILY;COUNT=1"
        out.append(PlannedDeployment(f"{sid}-wave-close-{c.wave}", f"wave {c.wave} closed: analysis and its releases",
                                     "wave_close", None, rrule, schedule.timezone,
                                     base | {"kind": "wave_close", "wave": c.wave, "late_runs": schedule.late_runs},
                                     due_now=c.wave in catch_up))
    out.append(PlannedDeployment(f"{sid}-weekly-report", "refresh the reports", "weekly_report", schedule.weekly_report,
                                 None, schedule.timezone,
                                 base | {"kind": "weekly_report", "wave": None, "late_runs": schedule.late_runs}))
    return out
