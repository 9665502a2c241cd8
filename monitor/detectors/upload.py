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
  Only records whose upload time is known count in the ratio: silence is never evidence of compliance.
* ``upload.time_unknown`` — records without ``inf_time`` (and without a broker timestamp: the worker
  passes the Kafka message timestamp as the upload time, design §3) have no known upload time. They
  are neither late nor on time: counted as data quality ``<stream>.upload_time_unknown``, and an
  institution-day whose share of them exceeds ``max_unknown_share`` gets a warning alert.
* ``upload.silent_stream`` — the extreme case of "未实现…实时上传": an institution-day with at least
  ``min_settlements`` settled settlements carrying drug lines but no 3505 sale uploaded for that day
  (进销存 silent), or with insured whole packs settled but no ``sale`` trace scan (追溯码 silent), when
  the day is judged (day end + ``max_lag_hours`` of ``upload.late``: anything later is not real time
  anyway, so the judgment is final). Triggers the same ``realtime`` ladder as ``upload.not_realtime``.
* Review evidence (EZ-DM 二(一) "1个月后仍未实现实时上传"): ``review_evidence`` tells the ledger, at
  the end of a suspension, whether the institution *showed* real-time uploads in the review window —
  records uploaded, on time, at its usual volume — rather than simply going quiet. Daily volumes per
  institution and stream group are kept for ``volume_memory_days``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from monitor.clock import CST, business_date, day_end, day_start
from monitor.contract import Delivery, Findings, ForgetDay, JudgeDay, Params, Placed, Rule, RuleContext
from monitor.detectors.windows import DayWindows
from monitor.records import PurchaseMovement, SaleMovement, Settlement, StockChange, Stocktake, TraceScan

if TYPE_CHECKING:
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
    #: daily upload volumes remembered per institution for end-of-suspension reviews
    volume_memory_days: int = Field(default=120, ge=30)


class TimeUnknownParams(Params):
    max_unknown_share: float = Field(ge=0, lt=1)
    min_unknown: int = Field(default=1, ge=1)


class SilentStreamParams(Params):
    min_settlements: int = Field(ge=1)
    streams: list[str] = Field(default=["inventory", "tracecodes"], min_length=1)


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
    #: records without a known upload time (neither late nor on time)
    unknown: int = 0
    unknown_by_stream: dict[str, int] = field(default_factory=dict)
    unknown_reported: bool = False
    #: settled settlements with drug lines / insured whole packs; 3505 sales; sale trace scans
    settlements: int = 0
    insured_packs: int = 0
    sales: int = 0
    sale_scans: int = 0
    silent_reported: bool = False


#: what a review counts per institution-day: [records with known upload time, late, unknown]
Volume = list[int]
def _add_volume(vol: Volume, known: bool, late: bool) -> None:
    """Count one record into its day's review volume."""
    if not known:
        vol[2] += 1
    else:
        vol[0] += 1
        if late:
            vol[1] += 1


#: a batch's mark of an institution-day that takes its records one by one (``UploadTimeliness.on_batch``)
_EXACT: list[Any] = []
#: batches shorter than this, or with fewer records per institution than that, go record by record
#: (``on_batch``: measured in the one-rule harness, city-month 300 institutions vs province-day 10 000)
_SHORT_BATCH = 8
_MIN_PER_INSTITUTION = 6


class UploadTimeliness(Rule):
    name: ClassVar[str] = "upload"
    rule_ids: ClassVar[tuple[str, ...]] = ("upload.late", "upload.not_realtime", "upload.time_unknown",
                                           "upload.silent_stream")
    streams: ClassVar[tuple[str, ...]] = (*UPLOAD_STREAMS, "prescriptions")
    params: ClassVar[dict[str, type[Params]]] = {
        "upload.late": LateParams,
        "upload.not_realtime": NotRealtimeParams,
        "upload.time_unknown": TimeUnknownParams,
        "upload.silent_stream": SilentStreamParams,
    }
    timers: ClassVar[tuple[type, ...]] = (JudgeDay, ForgetDay)
    state: ClassVar[tuple[str, ...]] = ("windows", "volumes")

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
        self.unknown_params: TimeUnknownParams | None = (
            self.param_model("upload.time_unknown") if pack.enabled("upload.time_unknown") else None)
        self.silent_params: SilentStreamParams | None = (
            self.param_model("upload.silent_stream") if pack.enabled("upload.silent_stream") else None)
        self.volume_memory = judge.volume_memory_days
        self.windows: DayWindows[DayTally] = DayWindows(self.max_lag, self.horizon, DayTally,
                                                       "upload.late_beyond_rejudge_horizon")
        #: institution → stream → business-day ordinal → [known, late, unknown] (review evidence)
        self.volumes: dict[str, dict[str, dict[int, Volume]]] = {}
        self._volume_pruned: int = 0

    # ---------------------------------------------------------------------------------- records
    def on_batch(self, stream: str, batch: Sequence[Delivery], ctx: RuleContext) -> list[Placed]:
        """The batch path (``monitor.contract``): the findings of ``on_record`` one by one, placed. An
        institution-day that cannot be judged inside the batch (not judged yet, its judgment due after
        the batch) is tallied once per batch: its records are summed per day and stream and added to the
        tally when the batch ends. A day already judged, or opened so late that its judgment falls inside
        the batch, takes its records one by one through ``on_record`` (each late one may judge it at
        once). The batch may mix streams (each record counts for its own)."""
        on_record = self.on_record
        if (len(batch) < _SHORT_BATCH  # the per-day sums would cost more than they save ...
                or len(batch) < _MIN_PER_INSTITUTION * len({d.record.fixmedins_code for d in batch})):  # type: ignore[union-attr]
            # ... also where most institutions have a record or two in the batch (a province-day)
            return self.each_delivery(batch, ctx, lambda d: on_record(d.record, d.arrival, ctx))
        max_lag, windows, until = self.max_lag, self.windows, batch[-1].now
        too_old = windows.too_old
        #: (code, day) → [tally or None (too old), known, late, unknown, settlements, whole-pack lines,
        #:  sales, sale scans, max lag s, late samples, late by stream, unknown by stream], or _EXACT
        acc: dict[tuple[str, date], list[Any]] = {}
        #: (code, day, stream) → [its review volume, its day's entry of ``acc`` (None: not tallied),
        #:  watched], or _EXACT: one look-up per record (rebuilt after the volumes are pruned)
        entries: dict[tuple[str, date, str], list[Any]] = {}
        pruned = [self._volume_pruned]
        unknown_n: dict[str, int] = {}

        def entry(d: Delivery, code: str, day: date, rstream: str, known: bool, late: bool) -> list[Any]:
            """First record of (code, day, stream) in the batch: route the day, count the record's
            volume (creating it as ``on_record`` would, at this record's event time)."""
            a = acc.get((code, day))
            if a is _EXACT:
                return _EXACT
            watched = rstream in self.watched
            tallying = watched or (self.silent_params is not None and rstream == "settlements")
            if a is None and tallying:
                tally = windows.days.get((code, day))
                if tally is None:
                    judge_at = day_end(day) + max_lag
                    if judge_at + windows.forget_after < d.now:
                        tally = None  # too old to be judged: counted per record below, as open() does
                    elif max(judge_at, d.now) <= until:
                        acc[(code, day)] = _EXACT  # its judgment falls inside the batch: one by one
                        return _EXACT
                    else:
                        tally = windows.open(code, day, ctx)
                elif tally.judged:
                    acc[(code, day)] = _EXACT
                    return _EXACT
                a = acc[(code, day)] = [tally, 0, 0, 0, 0, 0, 0, 0, 0.0, [], {}, {}]
            self._count_volume(code, rstream, day, known, late, ctx)
            if self._volume_pruned != pruned[0]:
                pruned[0] = self._volume_pruned
                entries.clear()
            e = entries[(code, day, rstream)] = [self.volumes[code][rstream][day.toordinal()],
                                                 a if tallying else None, watched]
            return e

        def handle(d: Delivery) -> Findings | None:
            rec = d.record
            btime = rec.business_time
            assert btime is not None
            code: str = rec.fixmedins_code  # type: ignore[union-attr]
            day = btime.date() if btime.tzinfo is CST else business_date(btime)
            rstream = rec.STREAM
            known = d.upload_time_known
            lag = d.arrival - btime
            late = known and lag > max_lag
            e = entries.get((code, day, rstream))
            if e is None:
                e = entry(d, code, day, rstream, known, late)
            else:
                _add_volume(e[0], known, late)
            if e is _EXACT:
                found = on_record(rec, d.arrival, ctx)
                if self._volume_pruned != pruned[0]:
                    pruned[0] = self._volume_pruned
                    entries.clear()
                return found
            a = e[1]
            if a is None:
                return None
            if a[0] is None:
                ctx.count(too_old)
                return None
            if isinstance(rec, Settlement):
                if rec.setl_status == "settled" and rec.drugdetail:
                    a[4] += 1
                    a[5] += sum(1 for line in rec.drugdetail if line.trdn_flag != "1")
            elif isinstance(rec, SaleMovement):
                a[6] += 1
            elif isinstance(rec, TraceScan) and rec.scan_kind == "sale":
                a[7] += 1
            if not e[2]:  # not watched: counted for the silent-stream judgment only
                return None
            if not known:
                a[3] += 1
                a[11][rstream] = a[11].get(rstream, 0) + 1
                unknown_n[rstream] = unknown_n.get(rstream, 0) + 1
            else:
                a[1] += 1
                if late:
                    a[2] += 1
                    a[10][rstream] = a[10].get(rstream, 0) + 1
                    a[8] = max(a[8], lag.total_seconds())
                    if len(a[9]) < 5:
                        a[9].append(record_ref(rec))
            return None

        out = self.each_delivery(batch, ctx, handle)
        for name, n in unknown_n.items():
            ctx.count(f"{name}.upload_time_unknown", n)
        for a in acc.values():
            if a is _EXACT or a[0] is None:
                continue
            tally, total, late_n, unknown, settlements, packs, sales, scans, lag_s, samples, lates, unknowns = a
            tally.total += total
            if late_n:
                tally.late += late_n
                for name, n in lates.items():
                    tally.late_by_stream[name] = tally.late_by_stream.get(name, 0) + n
                tally.max_lag_s = max(tally.max_lag_s, lag_s)
                tally.samples.extend(samples[:5 - len(tally.samples)])
            if unknown:
                tally.unknown += unknown
                for name, n in unknowns.items():
                    tally.unknown_by_stream[name] = tally.unknown_by_stream.get(name, 0) + n
            tally.settlements += settlements
            tally.insured_packs += packs
            tally.sales += sales
            tally.sale_scans += scans
        return out

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        btime = rec.business_time
        assert btime is not None
        code = rec.fixmedins_code  # type: ignore[union-attr]
        day = business_date(btime)
        known = ctx.upload_time_known
        lag = arrival - btime
        self._count_volume(code, rec.STREAM, day, known, known and lag > self.max_lag, ctx)
        watched = rec.STREAM in self.watched
        # a silent stream is judged against the day's settlements, also where settlements' own upload
        # times are not watched (xianyang: XY-TIER 第五条3 binds 进销存 and trace codes only)
        if not watched and not (self.silent_params is not None and isinstance(rec, Settlement)):
            return []
        tally = self.windows.open(code, day, ctx)
        if tally is None:
            return []
        if isinstance(rec, Settlement):
            if rec.setl_status == "settled" and rec.drugdetail:
                tally.settlements += 1
                tally.insured_packs += sum(1 for line in rec.drugdetail if line.trdn_flag != "1")
        elif isinstance(rec, SaleMovement):
            tally.sales += 1
        elif isinstance(rec, TraceScan) and rec.scan_kind == "sale":
            tally.sale_scans += 1
        if not watched:
            return []
        if not known:
            # no inf_time and no broker timestamp: neither late nor on time (silence is not compliance)
            tally.unknown += 1
            tally.unknown_by_stream[rec.STREAM] = tally.unknown_by_stream.get(rec.STREAM, 0) + 1
            ctx.count(f"{rec.STREAM}.upload_time_unknown")
            return self._judge(code, day, tally, ctx) if tally.judged else []
        tally.total += 1
        if lag > self.max_lag:
            tally.late += 1
            tally.late_by_stream[rec.STREAM] = tally.late_by_stream.get(rec.STREAM, 0) + 1
            tally.max_lag_s = max(tally.max_lag_s, lag.total_seconds())
            if len(tally.samples) < 5:
                tally.samples.append(record_ref(rec))
            if tally.judged:
                return self._judge(code, day, tally, ctx)
        return []

    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        assert isinstance(key, (JudgeDay, ForgetDay))
        tally = self.windows.fire(key)
        return self._judge(key.code, key.day, tally, ctx) if tally is not None else []

    # ------------------------------------------------------------------------------ review evidence
    def _count_volume(self, code: str, stream: str, day: date, known: bool, late: bool, ctx: RuleContext) -> None:
        ordinal = day.toordinal()
        by_stream = self.volumes.setdefault(code, {})
        days = by_stream.setdefault(stream, {})
        vol = days.get(ordinal)
        if vol is None:
            vol = days[ordinal] = [0, 0, 0]
            self._prune_volumes(ctx)
        _add_volume(vol, known, late)

    def _prune_volumes(self, ctx: RuleContext) -> None:
        limit = business_date(ctx.now).toordinal() - self.volume_memory
        if limit <= self._volume_pruned + 7:
            return
        self._volume_pruned = limit
        for by_stream in self.volumes.values():
            for days in by_stream.values():
                for ordinal in [o for o in days if o < limit]:
                    del days[ordinal]

    def review_evidence(self, code: str, streams: list[str], window: tuple[date, date],
                        baseline: tuple[date, date], min_volume_share: float,
                        max_late_share: float, each_stream: bool = True) -> dict[str, Any]:
        """Positive evidence of real-time uploads by ``code`` over ``window`` (inclusive days).

        Every one (``each_stream``; else at least one) of ``streams`` the institution used in
        ``baseline`` (inclusive days before the sanction) must have on-time uploads in the window with
        a late share ≤ ``max_late_share``; and the on-time volume of those streams together, per day,
        must be ≥ ``min_volume_share`` × their mean daily volume in the baseline. Records without a
        known upload time never count as evidence. Returns the facts with ``ok``; silence (nothing in
        the window) is never ``ok``."""
        by_stream = self.volumes.get(code, {})
        facts: dict[str, Any] = {"window": f"{window[0]}..{window[1]}",
                                 "baseline": f"{baseline[0]}..{baseline[1]}"}
        w0, w1, b0, b1 = (window[0].toordinal(), window[1].toordinal(), baseline[0].toordinal(),
                          baseline[1].toordinal())
        w_days, b_days = w1 - w0 + 1, max(b1 - b0 + 1, 1)
        oks: list[bool] = []
        on_time_total = usual_total = 0.0
        for stream in streams:
            days = by_stream.get(stream, {})
            known = late = unknown = 0
            for ordinal in range(w0, w1 + 1):
                vol = days.get(ordinal)
                if vol is not None:
                    known, late, unknown = known + vol[0], late + vol[1], unknown + vol[2]
            usual = sum(days[o][0] + days[o][2] for o in range(b0, b1 + 1) if o in days) / b_days
            if usual == 0:
                facts[stream] = {"usual_per_day": 0, "on_time": known - late, "note": "not used before"}
                on_time_total += (known - late) / w_days
                if not each_stream and known > late and late <= max_late_share * known:
                    oks.append(True)  # "any stream" evidence: a stream taken up while sanctioned counts
                continue
            stream_ok = known > late and late <= max_late_share * known
            oks.append(stream_ok)
            on_time_total += (known - late) / w_days
            usual_total += usual
            facts[stream] = {"on_time": known - late, "late": late, "upload_time_unknown": unknown,
                             "usual_per_day": round(usual, 2), "ok": stream_ok}
        volume_ok = on_time_total > 0 and on_time_total >= min_volume_share * usual_total
        facts["on_time_per_day"] = round(on_time_total, 2)
        facts["usual_per_day"] = round(usual_total, 2)
        streams_ok = all(oks) if each_stream else any(oks)
        facts["ok"] = bool(oks) and streams_ok and volume_ok
        return facts

    # ---------------------------------------------------------------------------------- judgment
    def _evidence(self, day: date, tally: DayTally) -> dict[str, Any]:
        ratio = Decimal(tally.late) / Decimal(tally.total) if tally.total else Decimal(0)
        return {
            "business_date": day.isoformat(),
            "records": tally.total,
            "late": tally.late,
            "late_ratio": f"{ratio:.4f}",
            "upload_time_unknown": tally.unknown,
            "late_by_stream": dict(sorted(tally.late_by_stream.items())),
            "max_lag_hours": round(tally.max_lag_s / 3600, 2),
            "max_allowed_lag_hours": self.max_lag.total_seconds() / 3600,
            "sample_records": list(tally.samples),
        }

    def _judge_unknown(self, code: str, day: date, tally: DayTally, ctx: RuleContext) -> Findings:
        p = self.unknown_params
        if p is None or tally.unknown_reported or tally.unknown < p.min_unknown:
            return []
        records = tally.unknown + tally.total
        if Decimal(tally.unknown) <= Decimal(str(p.max_unknown_share)) * records:
            return []
        tally.unknown_reported = True
        alert = ctx.alert(
            "upload.time_unknown", code, subject="day", window_start=day_start(day), window_end=day_end(day),
            evidence={"business_date": day.isoformat(), "records": records, "upload_time_unknown": tally.unknown,
                      "unknown_share": f"{Decimal(tally.unknown) / Decimal(records):.4f}",
                      "max_unknown_share": p.max_unknown_share,
                      "unknown_by_stream": dict(sorted(tally.unknown_by_stream.items()))},
            vola_cont=f"{day} 有 {tally.unknown}/{records} 条记录无上传时间(inf_time)，无法确认实时上传",
        )
        return [alert] if alert is not None else []

    def _judge_silent(self, code: str, day: date, tally: DayTally, ctx: RuleContext) -> Findings:
        p = self.silent_params
        if p is None or tally.silent_reported or tally.settlements < p.min_settlements:
            return []
        silent = []
        if "inventory" in p.streams and tally.sales == 0:
            silent.append("inventory")
        if "tracecodes" in p.streams and tally.insured_packs > 0 and tally.sale_scans == 0:
            silent.append("tracecodes")
        if not silent:
            return []
        tally.silent_reported = True
        names = {"inventory": "进销存(3505 销售)", "tracecodes": "追溯码(销售扫码)"}
        alert = ctx.alert(
            "upload.silent_stream", code, subject="day", window_start=day_start(day), window_end=day_end(day),
            evidence={"business_date": day.isoformat(), "settlements_with_drugs": tally.settlements,
                      "insured_whole_pack_lines": tally.insured_packs, "sales_3505": tally.sales,
                      "sale_scans": tally.sale_scans, "silent_streams": silent,
                      "judged_at_lag_hours": self.max_lag.total_seconds() / 3600},
            vola_cont=(f"{day} 结算 {tally.settlements} 笔，但{'、'.join(names[s] for s in silent)}在"
                       f" {self.max_lag.total_seconds() / 3600:g} 小时内无上传，未实现数据实时上传"),
        )
        escalation = ctx.escalate("upload.silent_stream", code, day, cause=f"silent:{day.isoformat()}",
                                  alert=alert)
        return [alert, escalation] if alert is not None else [escalation]

    def _judge(self, code: str, day: date, tally: DayTally, ctx: RuleContext) -> Findings:
        start, end = day_start(day), day_end(day)
        out = self._judge_unknown(code, day, tally, ctx)
        if not tally.silent_reported:
            out.extend(self._judge_silent(code, day, tally, ctx))
        if tally.late and not tally.late_reported and self.pack.enabled("upload.late"):
            tally.late_reported = True
            late = ctx.alert(
                "upload.late", code, subject="day", window_start=start, window_end=end,
                evidence=self._evidence(day, tally),
                vola_cont=f"{day} 有 {tally.late} 条记录超过 {self.max_lag.total_seconds() / 3600:g} 小时上传",
            )
            if late is not None:
                out.append(late)
        if tally.flagged or not self.judge_enabled:
            return out
        if tally.late >= self.min_late and Decimal(tally.late) >= self.min_ratio * tally.total:
            # tally.total counts only records whose upload time is known
            tally.flagged = True
            alert = ctx.alert(
                "upload.not_realtime", code, subject="day", window_start=start, window_end=end,
                evidence=self._evidence(day, tally),
                vola_cont=(f"{day} 迟传 {tally.late}/{tally.total} 条（≥{self.min_ratio:.0%} 且 ≥{self.min_late}"
                           f" 条），未实现数据实时上传"),
            )
            if alert is not None:
                out.append(alert)
            out.append(ctx.escalate("upload.not_realtime", code, day, cause=f"day:{day.isoformat()}", alert=alert))
        return out
