"""Interest rates by product and term, and foreign-exchange rates quoted per 100 units."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.errors import UnknownCurrencyError
from bankcore.models import ExchangeRate, InterestRate

# Product words customers use, mapped to product codes (data matching, not customer-facing text).
PRODUCT_ALIASES = {
    "存款": "deposit",
    "活期": "deposit_demand",
    "定期": "deposit_fixed",
    "整存整取": "deposit_fixed",
    "大额存单": "large_cd",
    "贷款": "loan",
    "房贷": "loan_mortgage",
    "住房贷款": "loan_mortgage",
    "消费贷": "loan_consumer",
    "经营贷": "loan_business",
}
CURRENCY_ALIASES = {
    "美金": "USD",
    "港元": "HKD",
    "日币": "JPY",
    "英镑": "GBP",
    "澳元": "AUD",
    "加元": "CAD",
    "新币": "SGD",
    "韩币": "KRW",
    "欧元": "EUR",
    "美元": "USD",
    "日元": "JPY",
    "港币": "HKD",
}


@dataclass(frozen=True)
class InterestRateView:
    product: str
    product_name: str
    term_months: int | None
    rate: Decimal  # yearly, percent
    effective_date: dt.date


@dataclass(frozen=True)
class ExchangeRateView:
    currency: str
    name: str
    buy: Decimal  # CNY the bank pays for `unit` units
    sell: Decimal  # CNY the bank charges for `unit` units
    unit: int
    as_of: dt.datetime


def _product_code(product: str) -> str:
    text = product.strip()
    for word, code in sorted(PRODUCT_ALIASES.items(), key=lambda item: -len(item[0])):
        if word in text:
            return code
    return text.lower()


def interest_rates(
    session: Session, product: str | None = None, *, term_months: int | None = None
) -> list[InterestRateView]:
    """Rates for a product code ('deposit_fixed'), a family prefix ('loan') or a Chinese product word."""
    rows = list(session.scalars(select(InterestRate).order_by(InterestRate.product, InterestRate.term_months)))
    if product:
        code = _product_code(product)
        rows = [r for r in rows if r.product == code or r.product.startswith(code) or product in r.product_name]
    if term_months is not None:
        rows = [r for r in rows if r.term_months == term_months]
    return [InterestRateView(r.product, r.product_name, r.term_months, r.rate, r.effective_date) for r in rows]


def _fx_view(row: ExchangeRate) -> ExchangeRateView:
    return ExchangeRateView(row.currency, row.name, row.buy, row.sell, 100, row.as_of)


def exchange_rate(session: Session, currency: str) -> ExchangeRateView:
    """By ISO code (any case) or Chinese name (美元, 美金, 日元 ...); unknown_currency otherwise."""
    text = (currency or "").strip()
    code = CURRENCY_ALIASES.get(text, text.upper())
    row = session.get(ExchangeRate, code) if len(code) == 3 else None
    if row is None:
        row = session.scalar(select(ExchangeRate).where(ExchangeRate.name == text))
    if row is None:
        raise UnknownCurrencyError(currency=currency)
    return _fx_view(row)


def list_exchange_rates(session: Session) -> list[ExchangeRateView]:
    return [_fx_view(r) for r in session.scalars(select(ExchangeRate).order_by(ExchangeRate.currency))]
