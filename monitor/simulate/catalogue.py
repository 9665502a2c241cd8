"""Reference data of the synthetic city: drug catalogue, people, names.

Everything here is derived deterministically from indices and a seeded ``random.Random`` — never from
``hash()`` (salted per process) or set order — so the same seed yields byte-identical files.

Prices
------
Each drug has a catalogue ``listed_price`` (挂网价, per pack) and a regional *standard* shelf price that
most pharmacies charge. For ordinary drugs the standard is 88 % of the listed price; for volume-procured
generics (集采) the listed price is a cap far above the market and the standard is 60 % of it. The gap
lets the simulator plant ``price.above_listed`` (≤ 2 % above listed, still < 20 % above the regional
mode) and ``price.above_mode`` (35 % above the mode, still under the listed price) independently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def money(value: Decimal) -> Decimal:
    """Round to the cent (half up, as cash registers do)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


# (generic name, ATC-like class, dosage form + spec, rx_flag, base listed price per pack, 集采, high value)
_GENERICS: tuple[tuple[str, str, str, str, str, bool, bool], ...] = (
    ("盐酸二甲双胍片", "A10BA", "0.5g*60片", "1", "18.60", True, False),
    ("阿莫西林胶囊", "J01CA", "0.25g*24粒", "1", "12.80", True, False),
    ("苯磺酸氨氯地平片", "C08CA", "5mg*28片", "1", "24.50", True, False),
    ("阿托伐他汀钙片", "C10AA", "20mg*14片", "1", "32.00", True, False),
    ("布洛芬缓释胶囊", "M01AE", "0.3g*20粒", "0", "15.90", False, False),
    ("奥美拉唑肠溶胶囊", "A02BC", "20mg*14粒", "1", "21.30", True, False),
    ("头孢克肟分散片", "J01DD", "0.1g*6片", "1", "28.70", False, False),
    ("硝苯地平控释片", "C08CA", "30mg*7片", "1", "33.40", False, False),
    ("缬沙坦胶囊", "C09CA", "80mg*28粒", "1", "38.20", True, False),
    ("厄贝沙坦片", "C09CA", "0.15g*12片", "1", "26.90", True, False),
    ("格列美脲片", "A10BB", "2mg*30片", "1", "29.80", False, False),
    ("阿卡波糖片", "A10BF", "50mg*30片", "1", "45.60", False, False),
    ("连花清瘟胶囊", "ZA01A", "0.35g*24粒", "0", "16.80", False, False),
    ("感冒灵颗粒", "ZA01B", "10g*9袋", "0", "14.50", False, False),
    ("板蓝根颗粒", "ZA01C", "10g*20袋", "0", "12.00", False, False),
    ("维生素C片", "A11GA", "0.1g*100片", "0", "6.50", False, False),
    ("氯雷他定片", "R06AX", "10mg*6片", "0", "19.80", False, False),
    ("蒙脱石散", "A07BC", "3g*10袋", "0", "17.20", False, False),
    ("复方甘草片", "R05DA", "100片", "0", "8.90", False, False),
    ("甲硝唑片", "J01XD", "0.2g*24片", "1", "7.60", True, False),
    ("左氧氟沙星片", "J01MA", "0.5g*4片", "1", "22.40", True, False),
    ("阿司匹林肠溶片", "B01AC", "100mg*30片", "1", "13.60", False, False),
    ("硫酸氢氯吡格雷片", "B01AC", "75mg*7片", "1", "48.00", True, False),
    ("瑞舒伐他汀钙片", "C10AA", "10mg*7片", "1", "27.50", True, False),
    ("厄贝沙坦氢氯噻嗪片", "C09DA", "0.15g*7片", "1", "31.90", False, False),
    ("复方丹参滴丸", "ZB02A", "27mg*180丸", "0", "39.80", False, False),
    ("藿香正气水", "ZA04A", "10ml*10支", "0", "11.50", False, False),
    ("金银花颗粒", "ZA01D", "10g*10袋", "0", "13.20", False, False),
    ("甲磺酸奥希替尼片", "L01EB", "80mg*30片", "1", "4800.00", False, True),
    ("阿达木单抗注射液", "L04AB", "40mg/0.8ml*1支", "1", "1150.00", False, True),
    ("甲磺酸仑伐替尼胶囊", "L01EX", "4mg*30粒", "1", "3300.00", False, True),
    ("恩扎卢胺软胶囊", "L02BB", "40mg*112粒", "1", "6800.00", False, True),
)

_MAKERS: tuple[str, ...] = (
    "华中药业股份有限公司", "石药集团欧意药业有限公司", "扬子江药业集团有限公司", "齐鲁制药有限公司",
    "华润三九医药股份有限公司", "以岭药业股份有限公司", "国药集团汕头金石制药有限公司",
    "浙江京新药业股份有限公司", "湖北广济药业股份有限公司", "阿斯利康制药有限公司",
)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅志强海燕玉兰春梅文军"

#: Regions of insured persons from outside the city (异地就医): Wuhan, Huangshi, Huanggang, Changsha.
OTHER_REGIONS: tuple[str, ...] = ("420100", "420200", "421100", "430100")


@dataclass(slots=True)
class DrugInfo:
    """A catalogue drug plus the simulator's price facts about it."""

    index: int
    med_list_codg: str
    name: str
    spec: str
    maker: str
    listed_price: Decimal
    standard_price: Decimal
    rx_flag: str
    procured: bool
    high_value: bool
    trace_prefix: str

    def record(self) -> dict[str, object]:
        """The ``medins.drugs`` catalogue record (design §3)."""
        return {
            "med_list_codg": self.med_list_codg,
            "name": self.name,
            "spec": self.spec,
            "prodentp_name": self.maker,
            "listed_price": str(self.listed_price),
            "rx_flag": self.rx_flag,
            "high_value": self.high_value,
        }


def build_catalogue(rng: random.Random, makers_per_drug: int = 3) -> list[DrugInfo]:
    """About 90 drugs: each generic from up to three manufacturers, NHSA-shaped codes
    (``X``/``Z`` + class + serials, 23 characters) and a 7-digit trace-code product prefix."""
    drugs: list[DrugInfo] = []
    for g, (name, klass, spec, rx, price, procured, high) in enumerate(_GENERICS):
        n_makers = 1 if high else makers_per_drug
        for m in range(n_makers):
            idx = len(drugs)
            maker = _MAKERS[(g * 3 + m) % len(_MAKERS)]
            kind = "Z" if klass.startswith("Z") else "X"
            code = f"{kind}{klass[1:] if kind == 'Z' else klass}{chr(65 + m)}{g:03d}A{1 + m:03d}0101{10000 + idx:05d}"
            listed = money(Decimal(price) * (Decimal(100 + rng.randint(-12, 12)) / 100))
            ratio = Decimal("0.60") if procured else Decimal("0.88")
            drugs.append(DrugInfo(
                index=idx, med_list_codg=code[:23], name=name, spec=spec, maker=maker, listed_price=listed,
                standard_price=money(listed * ratio), rx_flag=rx, procured=procured, high_value=high,
                trace_prefix=f"8{1000000 + idx * 7919 % 8999999:07d}"[:8],
            ))
    return drugs


@dataclass(frozen=True, slots=True)
class Person:
    """An insured person of the synthetic city (all identifiers are synthetic)."""

    psn_no: str
    certno: str
    psn_name: str
    insutype: str
    psn_type: str
    insuplc_admdvs: str
    retired: bool


def person(index: int, city_admdvs: str) -> Person:
    """The ``index``-th insured person, derived arithmetically (no state, any population size).

    Mix: two thirds employees (310; 30 % of them retired, ``psn_type`` 1201, else 1101), one third
    residents (390, 1501); one in 25 insured elsewhere (异地就医)."""
    employee = index % 3 != 0
    retired = employee and (index // 3) % 10 < 3
    insutype = "310" if employee else "390"
    psn_type = ("1201" if retired else "1101") if employee else "1501"
    region = OTHER_REGIONS[(index // 25) % len(OTHER_REGIONS)] if index % 25 == 7 else city_admdvs
    year = 1940 + index % 60 if retired else 1960 + index % 45
    month, day = 1 + index % 12, 1 + index % 28
    name = SURNAMES[index % len(SURNAMES)] + GIVEN[(index // 7) % len(GIVEN)]
    if index % 2:
        name += GIVEN[(index // 11) % len(GIVEN)]
    certno = f"{region}{year:04d}{month:02d}{day:02d}{index % 1000:03d}{index % 10}"
    return Person(psn_no=f"{region[:4]}{index:012d}", certno=certno, psn_name=name, insutype=insutype,
                  psn_type=psn_type, insuplc_admdvs=region, retired=retired)
