"""Real-time upload — EZ-DM 二(一).

    "未实现医保结算数据、进销存、药品耗材追溯码数据实时上传的中止门诊统筹服务 1 个月，1 个月后仍未实现实时
    上传的，终止其门诊统筹定点资格。"

* ``upload.late`` — a settlement, inventory or trace-code record whose arrival (``inf_time``) is more
  than ``max_lag_hours`` (default 24) after its business time. Exactly ``max_lag_hours`` is on time.
  Reported once per institution and business day (with per-stream counts and sample record ids).
* ``upload.not_realtime`` — an institution-day (Asia/Shanghai business date) with at least
  ``min_late_ratio`` (10 %) late records and at least ``min_late`` (5) of them. The day is first judged
  when event time reaches day end + ``max_lag_hours`` (by then every on-time record of that day must
  have arrived) and judged again whenever a late record of it arrives afterwards — late records can only
  push a day over, so a positive judgment is final. A positive day triggers the ``realtime`` ladder
  (suspend outpatient pooling one calendar month, then terminate or reinstate).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from monitor.clock import business_date, day_end, day_start
from monitor.detectors.base import Detector, Params
from monitor.records import PurchaseMovement, SaleMovement, Settlement, StockChange, Stocktake, TraceScan

if TYPE_CHECKING:
    from monitor.engine import Context
    from monitor.policy.pack import Pack
    from monitor.records import Record

UPLOAD_STREAMS = ("settlements", "inventory", "tracecodes")


class LateParams(Params):
    max_lag_hours: float = Field(gt=0)
    streams: list[str] = Field(default=list(UPLOAD_STREAMS), min_length=1)


class NotRealtimeParams(Params):
    min_late_ratio: float = Field(gt=0, le=1)
    min_late: int = Field(ge=1)
    rejudge_horizon_days: int = Field(default=62, ge=1)


def record_ref(rec: Record) -> str:
    """A short, non-personal reference to a record for evidence samples."""
    if isinstance(rec, Settlement):
        return f"setl_id={rec.setl_id}"
    if isinstance(rec, TraceScan):
        return f"drug_trac_codg={rec.drug_trac_codg}"
    if isinstance(rec, (SaleMovement, PurchaseMovement, StockChange, Stocktake)):
        ref = rec.setl_id or rec.rtal_docno or rec.fixmedins_bchno
        return f"{rec.infno}:{ref}"
    return rec.STREAM


@dataclass(slots=True)
class DayTally:
    total: int = 0
    late: int = 0
    late_by_stream: dict[str, int] = field(default_factory=dict)
    max_lag_s: float = 0.0
    samples: list[str] = field(default_factory=list)
    judged: bool = False
    flagged: bool = False
    late_reported: bool = False


class UploadTimeliness(Detector):
    name: ClassVar[str] = "upload"
    rule_ids: ClassVar[tuple[str, ...]] = ("upload.late", "upload.not_realtime")
    streams: ClassVar[tuple[str, ...]] = UPLOAD_STREAMS
    params: ClassVar[dict[str, type[Params]]] = {
        "upload.late": LateParams,
        "upload.not_realtime": NotRealtimeParams,
    }

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        late: LateParams = self.param_model("upload.late")
        judge: NotRealtimeParams = self.param_model("upload.not_realtime")
        self.max_lag = timedelta(hours=late.max_lag_hours)
        self.watched = frozenset(late.streams)
        self.min_ratio = Decimal(str(judge.min_late_ratio))
        self.min_late = judge.min_late
        self.horizon = timedelta(days=judge.rejudge_horizon_days)
        self.judge_enabled = pack.enabled("upload.not_realtime")
        self.days: dict[tuple[str, date], DayTally] = {}

    # ---------------------------------------------------------------------------------- records
    def on_record(self, rec: Record, arrival: datetime, ctx: Context) -> None:
        if rec.STREAM not in self.watched:
            return
        btime = rec.business_time
        assert btime is not None
        code = rec.fixmedins_code  # type: ignore[union-attr]
        day = business_date(btime)
        tally = self.open_day(self.days, code, day, self.max_lag, self.horizon, DayTally, ctx,
                              "upload.late_beyond_rejudge_horizon")
        if tally is None:
            return
        tally.total += 1
        lag = arrival - btime
        if lag > self.max_lag:
            tally.late += 1
            tally.late_by_stream[rec.STREAM] = tally.late_by_stream.get(rec.STREAM, 0) + 1
            tally.max_lag_s = max(tally.max_lag_s, lag.total_seconds())
            if len(tally.samples) < 5:
                tally.samples.append(record_ref(rec))
            if tally.judged:
                self._judge(code, day, tally, ctx)

    def on_timer(self, key: Hashable, ctx: Context) -> None:
        assert isinstance(key, tuple)
        kind, code, day = key
        if kind == "forget":
            self.days.pop((code, day), None)
            return
        tally = self.days.get((code, day))
        if tally is not None:
            tally.judged = True
            self._judge(code, day, tally, ctx)

    # ---------------------------------------------------------------------------------- judgment
    def _evidence(self, day: date, tally: DayTally) -> dict[str, Any]:
        return {
            "business_date": day.isoformat(),
            "records": tally.total,
            "late": tally.late,
            "late_ratio": f"{Decimal(tally.late) / Decimal(tally.total):.4f}",
            "late_by_stream": dict(sorted(tally.late_by_stream.items())),
            "max_lag_hours": round(tally.max_lag_s / 3600, 2),
            "max_allowed_lag_hours": self.max_lag.total_seconds() / 3600,
            "sample_records": list(tally.samples),
        }

    def _judge(self, code: str, day: date, tally: DayTally, ctx: Context) -> None:
        start, end = day_start(day), day_end(day)
        if tally.late and not tally.late_reported and self.pack.enabled("upload.late"):
            tally.late_reported = True
            ctx.alert(
                "upload.late", code, subject="day", window_start=start, window_end=end,
                evidence=self._evidence(day, tally),
                vola_cont=f"{day} 有 {tally.late} 条记录超过 {self.max_lag.total_seconds() / 3600:g} 小时上传",
            )
        if tally.flagged or not self.judge_enabled:
            return
        if tally.late >= self.min_late and Decimal(tally.late) >= self.min_ratio * tally.total:
            tally.flagged = True
            alert = ctx.alert(
                "upload.not_realtime", code, subject="day", window_start=start, window_end=end,
                evidence=self._evidence(day, tally),
                vola_cont=(f"{day} 迟传 {tally.late}/{tally.total} 条（≥{self.min_ratio:.0%} 且 ≥{self.min_late}"
                           f" 条），未实现数据实时上传"),
            )
            ctx.trigger("upload.not_realtime", code, day, cause=f"day:{day.isoformat()}",
                        alert_id=alert.alert_id if alert else None)
