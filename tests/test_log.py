import json
import logging

import pytest

from monitor.log import JsonFormatter


def test_json_log_lines_carry_ids_and_mask_personal_data(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("monitor.test", logging.WARNING, __file__, 1, "dead letter %s", ("x",), None)
    record.rule_id = "upload.late"
    record.certno = "420702198001011234"
    record.psn_name = "张三"
    line = JsonFormatter().format(record)
    doc = json.loads(line)
    assert doc["msg"] == "dead letter x" and doc["level"] == "warning" and doc["rule_id"] == "upload.late"
    assert "420702198001011234" not in line and "张三" not in line
    assert doc["certno"] == "4207************34" and doc["psn_name"] == "张*"
