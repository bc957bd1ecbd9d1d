"""The price table (parsing, exact fees), months and the usage report."""

from decimal import Decimal

import pytest

from stream_ekyc.config import ConfigError, Settings
from stream_ekyc.pricing import (DEFAULT_PRICES, PriceError, PriceTable, format_money, month_bounds, month_of,
                                 month_start, parse_month, usage_report)


def test_default_price_table():
    table = PriceTable.default()
    assert table.as_dict() == {"sessions.create": "0.01"} and DEFAULT_PRICES == {"sessions.create": "0.01"}
    assert table.fee_micros("sessions.create", 1) == 10_000 and table.fee_micros("sessions.create", 0) == 0
    assert table.fee_micros("sessions.get", 1) == 0  # not in the table: free
    assert Settings.from_env({}).prices == table


def test_prices_are_exact_decimals():
    table = PriceTable.parse('{"liveness": 0.01, "compare": 0.005, "sessions.create": "0.1", "demo.session": 0}')
    assert table.price_micros("compare") == 5_000 and table.price_micros("demo.session") == 0
    # 0.1 is not exact as a float; ten calls still cost exactly 1
    assert sum(table.fee_micros("sessions.create", 1) for _ in range(10)) == 1_000_000
    assert PriceTable.parse({"x.y": Decimal("0.000001")}).price_micros("x.y") == 1
    assert PriceTable.parse('{"x": 2}').fee_micros("x", 3) == 6_000_000
    assert PriceTable.parse("{}").fee_micros("sessions.create", 1) == 0


@pytest.mark.parametrize("text, message", [
    ("not json", "not valid JSON"),
    ("[0.01]", "expected a JSON object"),
    ('{"": 1}', "not an interface name"),
    ('{"Sessions Create": 1}', "not an interface name"),
    ('{"x": -0.01}', "between 0 and"),
    ('{"x": 2000000}', "between 0 and"),
    ('{"x": 0.0000001}', "at most 6 decimal places"),
    ('{"x": "abc"}', "not a number"),
    ('{"x": "NaN"}', "between 0 and"),
    ('{"x": true}', "expected a number"),
    ('{"x": null}', "expected a number"),
    ('{"x": [1]}', "expected a number"),
])
def test_price_table_errors(text, message):
    with pytest.raises(PriceError, match=message) as e:
        PriceTable.parse(text)
    assert "\n" not in str(e.value)


def test_price_setting_errors_name_the_variable():
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"STREAM_EKYC_PRICES": '{"x": -1}'})
    assert str(e.value).startswith("STREAM_EKYC_PRICES: ") and "\n" not in str(e.value)
    s = Settings.from_env({"STREAM_EKYC_PRICES": '{"sessions.create": "0.25"}'})
    assert s.prices.fee_micros("sessions.create", 1) == 250_000


def test_records_retention_setting():
    assert Settings.from_env({}).records_ttl_s == 730 * 86400.0
    assert Settings.from_env({"STREAM_EKYC_RECORDS_TTL_S": "86400"}).records_ttl_s == 86400.0
    for bad in ("0", "-5", "forever"):
        with pytest.raises(ConfigError, match="STREAM_EKYC_RECORDS_TTL_S"):
            Settings.from_env({"STREAM_EKYC_RECORDS_TTL_S": bad})


def test_money_format():
    assert [format_money(m) for m in (0, 10_000, 15_000, 1_000_000, 1_234_567, 5)] == [
        "0.00", "0.01", "0.015", "1.00", "1.234567", "0.000005"]


def test_months():
    nov = month_start(2026, 11)
    assert month_of(nov) == "2026-11" and month_of(nov - 0.001) == "2026-10"
    assert month_bounds(nov + 5) == (2026, 11, nov, month_start(2026, 12))
    assert month_bounds(month_start(2026, 12) + 1)[3] == month_start(2027, 1)
    assert parse_month("2026-11") == (2026, 11)
    for bad in ("2026-13", "2026-00", "26-11", "2026/11", "", "2026-1"):
        with pytest.raises(ValueError):
            parse_month(bad)


def test_usage_report_sums_exactly():
    rows = [{"interface": "sessions.create", "result": "ok", "calls": 3, "fee_micros": 30_000},
            {"interface": "sessions.create", "result": "bad_request", "calls": 1, "fee_micros": 0},
            {"interface": "sessions.get", "result": "ok", "calls": 2, "fee_micros": 0}]
    r = usage_report("app_x", "2026-11", rows)
    assert r["calls"] == 6 and r["results"] == {"bad_request": 1, "ok": 5}
    assert r["fee"] == "0.03" and r["fee_micros"] == 30_000
    assert r["interfaces"]["sessions.get"] == {"calls": 2, "results": {"ok": 2}, "fee": "0.00", "fee_micros": 0}
    assert usage_report("app_x", "2026-11", [])["fee"] == "0.00"
