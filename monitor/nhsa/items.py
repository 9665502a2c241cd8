"""What the codec hands to the join stage besides ordinary records (``monitor.records``).

Each item has what the shells' arrival-order merges read from a record — ``STREAM``, ``inf_time``,
``arrival_time``, ``business_time`` — so it travels through the replay merge and the worker's partition
queues like one; ``monitor.nhsa.join`` turns it into records for the engine. All are frozen and pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from monitor.records import DrugDetail, Settlement


@dataclass(frozen=True, slots=True)
class FeeLines:
    """2204 ``feedetail`` rows of one ``mdtrt_id``: the drug lines of a settlement uploaded apart."""

    STREAM: ClassVar[str] = "settlements"

    fixmedins_code: str
    mdtrt_id: str
    lines: tuple[DrugDetail, ...]
    inf_time: datetime | None
    fee_time: datetime | None

    @property
    def business_time(self) -> datetime | None:
        return self.fee_time

    @property
    def arrival_time(self) -> datetime | None:
        return self.inf_time if self.inf_time is not None else self.fee_time


@dataclass(frozen=True, slots=True)
class EnvelopeSettlement:
    """A 2102/2207 settlement. ``has_lines`` False: its lines come from 2204 (joined by ``mdtrt_id``)."""

    STREAM: ClassVar[str] = "settlements"

    settlement: Settlement
    has_lines: bool

    @property
    def inf_time(self) -> datetime | None:
        return self.settlement.inf_time

    @property
    def business_time(self) -> datetime:
        return self.settlement.setl_time

    @property
    def arrival_time(self) -> datetime | None:
        return self.settlement.arrival_time


@dataclass(frozen=True, slots=True)
class Revocation:
    """2103/2208: ``setl_id`` (+ ``mdtrt_id``, ``psn_no``), not the amounts. ``fields`` are the
    normalized fields the message did carry (used only when the original settlement is unknown)."""

    STREAM: ClassVar[str] = "settlements"

    setl_id: str
    fixmedins_code: str
    inf_time: datetime | None
    fields: tuple[tuple[str, Any], ...]

    @property
    def business_time(self) -> datetime | None:
        for key, value in self.fields:
            if key == "setl_time":
                return value  # type: ignore[no-any-return,unused-ignore]
        return None

    @property
    def arrival_time(self) -> datetime | None:
        return self.inf_time if self.inf_time is not None else self.business_time



#: 3507 ``inv_data_type`` → the interfaces of the movements it may name (notes/nhsa-fields.md: 1 盘存,
#: 2 库存变更, 3 采购, 4 销售). Our reading: 采购 covers the purchase and its return (3503/3504), 销售 the
#: sale and its return (3505/3506); the platform has no other delete interface for them.
INV_DATA_TYPE = {"1": ("3501",), "2": ("3502",), "3": ("3503", "3504"), "4": ("3505", "3506")}


@dataclass(frozen=True, slots=True)
class Retraction:
    """3507 商品信息删除: the institution deletes the movement it uploaded under ``fixmedins_bchno`` of
    the kind ``inv_data_type``. ``raw`` is the normalized message (no personal fields) for a dead letter."""

    STREAM: ClassVar[str] = "inventory"

    fixmedins_code: str
    fixmedins_bchno: str
    inv_data_type: str
    inf_time: datetime | None
    raw: bytes

    @property
    def business_time(self) -> datetime | None:
        return self.inf_time

    @property
    def arrival_time(self) -> datetime | None:
        return self.inf_time


Pending = FeeLines | EnvelopeSettlement | Revocation | Retraction
