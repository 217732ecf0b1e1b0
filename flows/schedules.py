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
