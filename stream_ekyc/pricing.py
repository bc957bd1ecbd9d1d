"""Fees and usage: the price table, months, and the usage report.

The price table maps an API interface name (as recorded in monitoring, e.g.
``sessions.create``) to the price of one billable unit, in the operator's currency. A call's
fee is its billable units (set by the route: 1 for a created session, 0 for a refused call)
times the price; interfaces missing from the table cost nothing. Prices are parsed as
decimals (never floats) and fees are kept as integer micro-units (1e-6 of the currency), so
sums are exact.

Default: ``{"sessions.create": "0.01"}`` (one liveness session costs 0.01). Set
``STREAM_EKYC_PRICES`` to a JSON object to change it, e.g.
``{"sessions.create": 0.01, "demo.session": 0}``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

MICROS = 1_000_000
MAX_PRICE = Decimal(1_000_000)
DEFAULT_PRICES = {"sessions.create": "0.01"}

_INTERFACE_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


class PriceError(ValueError):
    """The price table is not usable (one line)."""


class PriceTable:
    """Interface name -> price of one unit, in micro-units (exact integers)."""

    def __init__(self, micros: Mapping[str, int]):
        self._micros = dict(micros)

    @classmethod
    def default(cls) -> "PriceTable":
        return cls.parse(json.dumps(DEFAULT_PRICES))

    @classmethod
    def parse(cls, text: str | Mapping[str, Any]) -> "PriceTable":
        """A JSON object (text, or an already-parsed mapping) of interface -> price, each a
        non-negative number or decimal string with at most 6 decimals."""
        if isinstance(text, str):
            try:
                obj = json.loads(text, parse_float=Decimal, parse_int=Decimal)
            except json.JSONDecodeError as e:
                raise PriceError(f"not valid JSON ({e.msg} at position {e.pos})") from None
        else:
            obj = text
        if not isinstance(obj, Mapping):
            raise PriceError('expected a JSON object such as {"sessions.create": 0.01}')
        return cls({_interface(k): _price_micros(k, v) for k, v in obj.items()})

    def price_micros(self, interface: str) -> int:
        return self._micros.get(interface, 0)

    def fee_micros(self, interface: str, units: int) -> int:
        """The fee of a call with ``units`` billable units (0 for none)."""
        return self.price_micros(interface) * max(0, int(units))

    def as_dict(self) -> dict[str, str]:
        return {k: format_money(v) for k, v in sorted(self._micros.items())}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceTable) and other._micros == self._micros

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._micros.items())))

    def __repr__(self) -> str:
        return f"PriceTable({self.as_dict()})"


def _interface(k: Any) -> str:
    if not isinstance(k, str) or not _INTERFACE_RE.fullmatch(k):
        raise PriceError(f"{str(k)[:40]!r} is not an interface name (lower-case letters, digits, '.', '_')")
    return k


def _price_micros(k: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal, str, float)):
        raise PriceError(f"{k}: expected a number or a decimal string, got {type(v).__name__}")
    try:
        d = Decimal(str(v).strip()) if not isinstance(v, Decimal) else v
    except InvalidOperation:
        raise PriceError(f"{k}: {str(v)[:40]!r} is not a number") from None
    if not d.is_finite() or d < 0 or d > MAX_PRICE:
        raise PriceError(f"{k}: price must be between 0 and {MAX_PRICE}, got {str(v)[:40]}")
    micros = d * MICROS
    if micros != micros.to_integral_value():
        raise PriceError(f"{k}: at most 6 decimal places, got {str(v)[:40]}")
    return int(micros)


def format_money(micros: int) -> str:
    """Micro-units as a decimal string with at least two decimals: 15000 -> '0.015'."""
    whole, frac = f"{Decimal(int(micros)) / MICROS:.6f}".split(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


# --- months (UTC) ----------------------------------------------------------------------------

def month_of(t: float) -> str:
    """``YYYY-MM`` of a Unix time, in UTC."""
    d = datetime.fromtimestamp(t, timezone.utc)
    return f"{d.year:04d}-{d.month:02d}"


def parse_month(s: str) -> tuple[int, int]:
    """``YYYY-MM`` -> (year, month); ValueError otherwise."""
    m = _MONTH_RE.fullmatch(s.strip()) if isinstance(s, str) else None
    if not m or not (1 <= int(m.group(2)) <= 12) or not (1970 <= int(m.group(1)) <= 9999):
        raise ValueError(f"month must be YYYY-MM (e.g. 2026-11), got {str(s)[:20]!r}")
    return int(m.group(1)), int(m.group(2))


def month_start(year: int, month: int) -> float:
    return datetime(year, month, 1, tzinfo=timezone.utc).timestamp()


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_bounds(t: float) -> tuple[int, int, float, float]:
    """(year, month, start, end) of the UTC month holding ``t``; end is exclusive."""
    y, m = parse_month(month_of(t))
    return y, m, month_start(y, m), month_start(*next_month(y, m))


# --- the usage report ------------------------------------------------------------------------

def usage_report(app_id: str, month: str, rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``stream-ekyc usage`` answer from ``RecordsStore.usage`` rows: totals, results
    breakdown and fee, overall and per interface. Fees as decimal strings."""
    interfaces: dict[str, dict[str, Any]] = {}
    results: dict[str, int] = {}
    calls = fee = 0
    for r in rows:
        i = interfaces.setdefault(r["interface"], {"calls": 0, "results": {}, "fee_micros": 0})
        i["calls"] += r["calls"]
        i["fee_micros"] += r["fee_micros"]
        i["results"][r["result"]] = i["results"].get(r["result"], 0) + r["calls"]
        results[r["result"]] = results.get(r["result"], 0) + r["calls"]
        calls += r["calls"]
        fee += r["fee_micros"]
    return {
        "app_id": app_id, "month": month, "calls": calls, "results": dict(sorted(results.items())),
        "fee": format_money(fee), "fee_micros": fee,
        "interfaces": {name: {"calls": i["calls"], "results": dict(sorted(i["results"].items())),
                              "fee": format_money(i["fee_micros"]), "fee_micros": i["fee_micros"]}
                       for name, i in sorted(interfaces.items())},
    }
