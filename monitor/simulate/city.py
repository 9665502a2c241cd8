"""Institutions of the synthetic city and the services each may settle.

Codes are 12 characters as on the NHSA platform: ``P`` (retail pharmacy, ``fixmedins_type`` 2) or ``H``
(primary clinic, type 1) + the 6-digit district code + a 5-digit serial, e.g. ``P42070200017``.

Tiers (design §5, XY-TIER 第四条, LN-TIER 二): a region that grades institutions gives each a tier and
the services it may settle. The Ezhou profile mixes ungraded institutions with both schemes so that
``tier.not_entitled`` has something to judge. Services of a settlement: ``acct`` (personal account
only), ``chronic`` (门诊慢特病, med_type 14), ``pooling`` (门诊统筹), ``remote`` (异地就医: insured
elsewhere), ``special`` (门诊特药/双通道: a high-value drug line). The simulator never lets background
traffic settle a service outside its tier.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from monitor.clock import add_years

#: Services allowed per tier (design §5). XY: A acct only; B +慢特病; C +门诊统筹, 两病 (not pharmacies),
#: 异地; D +特药. LN: I acct; II +门诊统筹; III +慢特病, 两病, 双通道.
TIER_SERVICES: dict[tuple[str, str], frozenset[str]] = {
    ("XY", "A"): frozenset({"acct"}),
    ("XY", "B"): frozenset({"acct", "chronic"}),
    ("XY", "C"): frozenset({"acct", "chronic", "pooling", "remote"}),
    ("XY", "D"): frozenset({"acct", "chronic", "pooling", "remote", "special"}),
    ("LN", "I"): frozenset({"acct"}),
    ("LN", "II"): frozenset({"acct", "pooling"}),
    ("LN", "III"): frozenset({"acct", "pooling", "chronic", "special"}),
}
ALL_SERVICES = frozenset({"acct", "chronic", "pooling", "remote", "special"})

_DISTRICTS = ("420702", "420703", "420704")  # 梁子湖区, 华容区, 鄂城区
_CHAINS = ("老百姓大药房", "益丰大药房", "国大药房", "九州通好药师")
_STREETS = ("古楼", "凤凰", "西山", "樊口", "泽林", "杨叶", "华容", "葛店", "段店", "沙窝", "长港", "庙岭")


@dataclass(slots=True)
class Batch:
    """One stocked batch (``fixmedins_bchno``) of a drug: whole packs with trace codes, an opened pack's
    remaining quarters (拆零), and codes returned by customers (sold again first)."""

    bchno: str
    lot: str
    next_serial: int
    end_serial: int
    open_quarters: int = 0
    returned: list[tuple[int, str]] = field(default_factory=list)  # (back on the shelf at, code)
    available_from: int = 0

    @property
    def whole(self) -> int:
        return self.end_serial - self.next_serial + len(self.returned)

    def quarters(self) -> int:
        return self.whole * 4 + self.open_quarters

    def whole_at(self, t: int) -> int:
        """Whole packs sellable at ``t`` (a returned pack only once its return has happened)."""
        return self.end_serial - self.next_serial + sum(1 for at, _ in self.returned if at <= t)

    def pop_returned(self, t: int) -> str | None:
        for i, (at, code) in enumerate(self.returned):
            if at <= t:
                del self.returned[i]
                return code
        return None


@dataclass(slots=True)
class Restriction:
    """Days ``[start, end)`` (day indices; ``end`` None = for good) on which the institution settles no
    ``pooling`` (门诊统筹) or no ``insured`` business at all, because a sanction is (expected to be) in
    force. Keeps plants of one rule from tripping ``status.settled_while_suspended``."""

    start: int
    end: int | None
    kind: str

    def covers(self, day: int) -> bool:
        return self.start <= day and (self.end is None or day < self.end)


@dataclass(slots=True)
class Inst:
    """An institution and the simulator's state about it."""

    index: int
    code: str
    name: str
    kind: str  # "1" clinic, "2" pharmacy
    admdvs: str
    tier: str | None
    scheme: str | None
    pooling: bool
    special: bool
    agreement_start: date
    agreement_end: date
    designated_since: date
    rate: float  # mean insured settlements per open day
    selfpay_ratio: float
    open_hour: int
    close_hour: int
    drugs: list[int] = field(default_factory=list)
    price: dict[int, Decimal] = field(default_factory=dict)
    stock: dict[int, list[Batch]] = field(default_factory=dict)
    batch_seq: int = 0
    setl_seq: int = 0
    doc_seq: int = 0
    rx_seq: int = 0
    restrictions: list[Restriction] = field(default_factory=list)
    role: str = "background"

    @property
    def is_pharmacy(self) -> bool:
        return self.kind == "2"

    def services(self) -> frozenset[str]:
        if self.scheme is None or self.tier is None:
            allowed = set(ALL_SERVICES)
            if not self.special:
                allowed.discard("special")
            if self.scheme is None and not self.pooling:
                allowed.discard("pooling")
            return frozenset(allowed)
        allowed = set(TIER_SERVICES[(self.scheme, self.tier)])
        if not self.special:
            allowed.discard("special")
        return frozenset(allowed)

    def restricted(self, day: int, kind: str) -> bool:
        """True when ``kind`` business (``pooling`` or ``insured``) is stopped on ``day``."""
        for r in self.restrictions:
            if r.covers(day) and (r.kind == kind or r.kind == "insured"):
                return True
        return False

    def record(self, valid_from: str) -> dict[str, object]:
        """The ``medins.institutions`` registry record (design §3)."""
        return {
            "fixmedins_code": self.code,
            "fixmedins_name": self.name,
            "fixmedins_type": self.kind,
            "admdvs": self.admdvs,
            "outpatient_pooling": self.pooling,
            "agreement_start": self.agreement_start.isoformat(),
            "agreement_end": self.agreement_end.isoformat(),
            "designated_since": self.designated_since.isoformat(),
            "tier": self.tier,
            "tier_scheme": self.scheme,
            "valid_from": valid_from,
        }


def _tier(rng: random.Random) -> tuple[str | None, str | None]:
    u = rng.random()
    if u < 0.6:
        return None, None
    if u < 0.8:
        return "XY", rng.choices(("A", "B", "C", "D"), (1, 2, 5, 2))[0]
    return "LN", rng.choices(("I", "II", "III"), (1, 5, 4))[0]


def _graded(rng: random.Random, scheme: str) -> tuple[str | None, str | None]:
    """A region that grades every institution by its own scheme (``none``: a region that grades none)."""
    if scheme == "XY":
        return "XY", rng.choices(("A", "B", "C", "D"), (1, 2, 5, 2))[0]
    if scheme == "LN":
        return "LN", rng.choices(("I", "II", "III"), (1, 5, 4))[0]
    return None, None


def build_institutions(rng: random.Random, n: int, start: date, n_drugs: int,
                       high_value: list[int], scale: float, scheme: str | None = None,
                       districts: tuple[str, ...] = _DISTRICTS, city_name: str = "鄂州") -> list[Inst]:
    """``n`` institutions: three in four pharmacies (some in chains), the rest clinics; volumes skewed
    (log-normal: a few busy, many quiet); agreement years starting on various anniversaries. Tiers:
    ``scheme`` None mixes ungraded institutions with both schemes (the Ezhou profile); ``XY``/``LN``
    grades every one by that scheme; ``none`` grades none."""
    out: list[Inst] = []
    serial: dict[tuple[str, str], int] = {}
    ordinary = [d for d in range(n_drugs) if d not in high_value]
    for i in range(n):
        pharmacy = i % 4 != 3
        kind = "2" if pharmacy else "1"
        district = districts[rng.randrange(len(districts))]
        key = (kind, district)
        serial[key] = serial.get(key, 0) + 1
        code = f"{'P' if pharmacy else 'H'}{district}{serial[key]:05d}"
        street = _STREETS[rng.randrange(len(_STREETS))]
        if pharmacy:
            chain = _CHAINS[rng.randrange(len(_CHAINS))] if rng.random() < 0.4 else None
            name = (f"{chain}（{city_name}{street}{serial[key]}店）" if chain
                    else f"{city_name}市{street}康民大药房{serial[key]}号")
        else:
            name = f"{city_name}市{street}社区卫生服务站{serial[key]}"
        scheme_of, tier = _tier(rng) if scheme is None else _graded(rng, scheme)
        inst_services = (TIER_SERVICES.get((scheme_of, tier), ALL_SERVICES) if scheme_of and tier
                         else ALL_SERVICES)
        pooling = "pooling" in inst_services and rng.random() < 0.9
        special = pharmacy and "special" in inst_services and rng.random() < 0.15
        anniversary = date(start.year - 1, 1 + rng.randrange(12), 1)
        agreement_start = anniversary
        since = date(2008 + rng.randrange(16), 1 + rng.randrange(12), 1 + rng.randrange(28))
        rate = min(250.0, max(2.0, rng.lognormvariate(2.9, 0.8))) * scale
        if not pharmacy:
            rate *= 0.6
        n_stock = min(len(ordinary), 25 + rng.randrange(30)) if pharmacy else min(len(ordinary), 15)
        drugs = sorted(rng.sample(ordinary, n_stock))
        if special:
            drugs += high_value
        out.append(Inst(
            index=i, code=code, name=name, kind=kind, admdvs=district, tier=tier, scheme=scheme_of,
            pooling=pooling, special=special, agreement_start=agreement_start,
            agreement_end=add_years(agreement_start, 3), designated_since=min(since, agreement_start),
            rate=rate, selfpay_ratio=0.3 + rng.random() * 0.4 if pharmacy else 0.05,
            open_hour=7 + rng.randrange(2) if pharmacy else 8, close_hour=21 + rng.randrange(2) if pharmacy else 18,
            drugs=drugs,
        ))
    return out
