"""Clause text excerpts for case files: short id + clause → the sentences of the regulation it cites.

Inspectors read the clause beside the finding, so the case file quotes it. The texts are verbatim
fragments of the documents in ``shared/regulations`` (see its README for the short ids); a test checks
every fragment against the source file when that folder is present. They ship inside the package because
a deployment (and CI) has no ``shared/`` folder.

A clause id is ``SHORT-ID CLAUSE``, e.g. ``EZ-DM 二(一)``; ASCII and full-width brackets are the same
clause. A more specific id falls back to its enclosing clause (``LN-TIER 四(三)9`` → ``LN-TIER 四(三)``).
"""

from __future__ import annotations

#: Document titles, by short id (shared/regulations/README.md).
DOCUMENTS: dict[str, str] = {
    "EZ-DM": "鄂州医保服文〔2025〕1号《鄂州市基本医疗保险门诊统筹定点动态管理经办规程（试行）》",
    "XY-TIER": "咸阳市 定点医药机构分级管理办法（征求意见稿，2025）",
    "EZ-CONV": "《鄂州市优化职工医保门诊统筹便民服务措施清单》",
    "AR-AGR": "自治区医保局《关于进一步加强医疗保障定点医药机构协议管理的通知》（征求意见稿）",
    "LN-TIER": "《关于推进辽宁省定点医药机构医保门诊结算分级管理工作的指导意见》",
}

#: Source file of each document inside shared/regulations (used by the verbatim test only).
SOURCE_FILES: dict[str, str] = {
    "EZ-DM": "000_0603fce4f41a41fa.txt",
    "XY-TIER": "001_268b7e521ef2468c.txt",
    "EZ-CONV": "002_f0cb09b8305d2107.txt",
    "AR-AGR": "003_c6479ebf448b9d94.txt",
    "LN-TIER": "004_b634415882915f23.txt",
}

#: Clause id → verbatim fragments (each one contiguous in the source; shown joined by " …… ").
EXCERPTS: dict[str, tuple[str, ...]] = {
    # ---------------------------------------------------------------- EZ-DM (Ezhou dynamic management)
    "EZ-DM 二": (
        "定点医药机构动态调整按照《鄂州市医疗保障定点医疗机构服务协议》、《鄂州市医疗保障定点零售药店服务协议》"
        "及《医疗保障基金使用监督管理条例》相关规定执行。",
    ),
    "EZ-DM 二(一)": (
        "服务协议年度内，有 2 次及以上投诉经查实的，中止门诊统筹服务 1 个月；未实现医保结算数据、进销存、"
        "药品耗材追溯码数据实时上传的中止门诊统筹服务 1 个月，1 个月后仍未实现实时上传的，终止其门诊统筹定点资格；"
        "信息标准化建设不达标的，或因服务能力等原因导致重大负面影响的，中止门诊统筹服务 6 个月。",
    ),
    "EZ-DM 二(二)": (
        "医保结算数据、进销存数据经查实不完整的中止门诊统筹服务 6 个月，6 个月后至两年内再次发现数据不完整的，"
        "取消门诊统筹定点资格。",
        "医保结算数据、进销存数据经查实有虚假的，取消门诊统筹服务，三年内不能再次申报门诊统筹定点资格。"
        "协议期内，因云监控查实不符合管理规定被通报两次及以上的，取消门诊统筹定点资格。",
    ),
    "EZ-DM 二(三)": (
        "未能实现处方全量上传到医保电子处方平台的，或不配合 AOG 支付方式改革工作推进的，中止协议。"
        "限期 1 个月内整改，整改达不到要求的，取消门诊统筹定点资格。",
    ),
    "EZ-DM 二(四)": ("予以终止服务协议处理的定点医药机构，取消其门诊统筹定点资格。",),
    # ---------------------------------------------------------------- EZ-CONV (Ezhou convenience measures)
    "EZ-CONV 二": (
        "职工医保参保人员凭外配处方，在定点零售药店购药发生的合规费用，按照在职职工60%、退休人员68%的比例落实"
        "门诊统筹待遇。",
    ),
    "EZ-CONV 三": (
        "定点药店医保目录内药品销售价格，本着惠民利民原则，由医保部门参照省药械集中采购服务平台同厂家同规格药品"
        "挂网价格，与定点药店协商谈判，并通过医保服务协议进行约定。",
    ),
    "EZ-CONV 五": ("各级医疗机构要落实长处方制度，为符合条件的慢性病患者开具不超过12周的长处方，增加就医购药便利度。",),
    # ---------------------------------------------------------------- AR-AGR (autonomous-region agreements)
    "AR-AGR 二(二)": ("（二）不再签订的情形。定点医药机构存在以下情形之一的，不再签订协议：",),
    "AR-AGR 二(二)3": ("3.上年度协议期内未发生医保结算费用的；",),
    "AR-AGR 二(二)8": (
        "8.未按要求安装追溯码扫描设备，未落实追溯码扫码和上传等工作任务，未实现“依码结算、依码支付”的；",
    ),
    "AR-AGR 二(二)13": (
        "13.定点零售药店经数据筛查、现场核查、群众举报发现对医保和非医保患者采用“阴阳价格”，即完全相同的药品"
        "销售给医保患者的价格高于非参保患者，涉及药品金额较大、情节严重的定点药店；",
    ),
    "AR-AGR 三(二)2": (
        "2.对于定点药店违反医保服务协议执行“阴阳价格”的，视情节严重程度和整改情况，采取约谈主要负责人、暂停医保"
        "结算、不予支付或追回已支付医保基金、暂停或解除医保服务协议、移交相关部门处理等措施严肃处理，切实维护医保"
        "基金安全，保障群众购药权益。",
    ),
    "AR-AGR 三(三)": (
        "（三）严格协议执行。定点医药机构被解除协议后，3年内不得再次申请。严格执行违约责任的协议处理，对协议有效期内"
        "累计2次及以上被中止医保服务协议，或中止医保服务协议期间未按要求整改或整改不到位的定点医药机构，应当即时解除"
        "协议。",
    ),
    # ---------------------------------------------------------------- LN-TIER (Liaoning settlement tiers)
    "LN-TIER 二": (
        "纳入医保结算分级管理的定点医药机构，按照医保基金结算服务类型分成I、II、III三级。",
        "1.I级定点医药机构：可开展医保个人账户结算服务。",
        "2.II级定点医药机构：可开展医保个人账户、门诊统筹结算服务。",
        "3.III级定点医药机构：可开展医保个人账户、门诊统筹、门诊慢特病、居民“两病”（高血压、糖尿病）门诊用药、"
        "“双通道”高值药品等结算服务。",
    ),
    "LN-TIER 三(一)3": ("3.按规定使用药品耗材追溯码，实现“应采尽采、依码结算、依码支付”；",),
    "LN-TIER 四(三)": (
        "（三）定点医药机构有以下情形之一的，各市应及时调整医保结算分级，给予降级或不予晋级处理，直至解除医保协议。",
    ),
    "LN-TIER 四(三)2": (
        "2.年度内因违法、违规、违约被医保部门约谈法定代表人、主要负责人或实际控制人达3次的，Ⅱ级、III级定点医药机构"
        "降至I级，I级定点医药机构不晋级；",
    ),
    "LN-TIER 四(三)3": (
        "3.年度内因违法、违规、违约被医保部门暂停医保费用费用结算或拨付达2次的；被给予不予支付或追回已支付医保费用"
        "处理达2次的，Ⅱ级、III级定点医药机构降至I级，I级定点医药机构不晋级；",
    ),
    "LN-TIER 四(三)4": (
        "4.年度内因违法、违规、违约被医保部门中止医保协议达1次的，Ⅱ级、III级定点医药机构降至I级，I级定点医药机构"
        "不晋级；",
    ),
    "LN-TIER 四(三)1": (
        "1.不能持续满足现有医保结算分级标准，在医保经办机构下达限期整改通知后，未按要求整改或整改不到位的，予以降级处理，"
        "降至能够满足相应条件的级别直至解除医保协议；",
    ),
    "LN-TIER 四(三)5": (
        "5.年度内因违反《医疗保障基金使用监督管理条例》（国令第735号），受到医保等部门作出的与医药费用有关的行政处罚达1次"
        "的；被责令暂停相关责任部门涉及医保基金使用的医药服务达1次，Ⅱ级、III级定点医药机构至I级，I级定点医药机构不晋级；",
    ),
    "LN-TIER 四(三)6": (
        "6.符合《医疗机构医疗保障定点管理暂行办法》（国家医疗保障局令第2号）、《零售药店医疗保障定点管理暂行办法》"
        "（国家医疗保障局令第3号）规定及医保协议约定等解除医保协议情形，予以解除医保协议。",
    ),
    # ---------------------------------------------------------------- XY-TIER (Xianyang settlement tiers)
    "XY-TIER 第四条": (
        "第四条定点医药机构按医保基金结算服务类型划分为A、B、C、D四级:",
        "1.A级结算服务:可开展医保个人账户结算。",
        "2.B级结算服务:在A级基础上,增加门诊慢特病结算。",
        "3.C级结算服务:在B级基础上,增加门诊统筹、居民“两病”门诊用药(零售药店除外)、异地就医结算。",
        "4.D级结算服务:在C级基础上,增加门诊特药结算,并遵循“保障供应、控制规模”原则开通。",
    ),
    "XY-TIER 第十四条": (
        "第十四条发生以下情形的,由县级经办机构报同级医保行政部门及市级经办机构给予降级处理,直至解除医保服务协议,"
        "市医保行政部门向社会公布降级、解除医保协议情况:",
        "(一)近1年内因违反协议相关条款约谈法定代表人、主要负责人或实际控制人达到两次的,给予降一级处理。",
        "(二)近1年内因违反《医疗保障基金使用监督管理条例》第三十八、第三十九条内容被约谈或违反协议相关条款暂停结算"
        "或不予支付医保费用一次的,给予降一级处理。",
        "(三)近1年内因违反《医疗保障基金使用监督管理条例》第三十八、第三十九条内容造成基金损失被处以罚款或违反协议"
        "相关条款中止医保服务的,给予降一级处理。",
    ),
    "XY-TIER 第十四条(一)": (
        "(一)近1年内因违反协议相关条款约谈法定代表人、主要负责人或实际控制人达到两次的,给予降一级处理。",
    ),
    "XY-TIER 第十四条(二)": (
        "(二)近1年内因违反《医疗保障基金使用监督管理条例》第三十八、第三十九条内容被约谈或违反协议相关条款暂停结算"
        "或不予支付医保费用一次的,给予降一级处理。",
    ),
    "XY-TIER 第十四条(三)": (
        "(三)近1年内因违反《医疗保障基金使用监督管理条例》第三十八、第三十九条内容造成基金损失被处以罚款或违反协议"
        "相关条款中止医保服务的,给予降一级处理。",
    ),
    "XY-TIER 第十四条(四)": ("(四)违反协议相关条款应予以解除医保协议的,给予解除医保服务协议处理。",),
    "XY-TIER 第十二条": (
        "2.年度考评:按照医保行政部门安排开展年度综合考核,总分低于60分的机构,经办机构需在接到医保行政部门考核结果通报后"
        "15个工作日内启动定点资质解除程序。",
    ),
    "XY-TIER 第十三条": (
        "第十三条定点医药机构出现以下情形时,应按程序退出:",
        "3.信息公告:退出信息需在医保部门官网及政务服务平台向社会进行公告,被解除协议机构3年内、主动退出机构1年内不得"
        "重新申请定点。",
    ),
}

_FULL_WIDTH = str.maketrans({"（": "(", "）": ")", "　": " "})


def normalize(clause: str) -> str:
    """Canonical clause id: ASCII brackets, single spaces, no spaces inside the clause part."""
    text = " ".join(clause.translate(_FULL_WIDTH).split())
    doc, _, rest = text.partition(" ")
    return f"{doc} {rest.replace(' ', '')}" if rest else doc


def excerpt(clause: str) -> tuple[str, ...]:
    """The verbatim fragments quoted for ``clause``; the enclosing clause's when the exact one has none;
    ``()`` when nothing of that document is known."""
    key = normalize(clause)
    doc, _, rest = key.partition(" ")
    while rest:
        found = EXCERPTS.get(f"{doc} {rest}")
        if found is not None:
            return found
        rest = rest[:-1]
    return ()


def document(clause: str) -> str | None:
    """Title of the document a clause id points into (``None`` for an unknown short id)."""
    return DOCUMENTS.get(normalize(clause).partition(" ")[0])
