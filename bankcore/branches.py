"""Branch lookup by city and/or district as customers say them ('北京朝阳', '朝阳区', '上海')."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.models import Branch

# Administrative suffixes customers often leave out: 朝阳区 → 朝阳, 北京市 → 北京, 浦东新区 → 浦东.
_SUFFIXES = ("新区", "市", "区", "县")


@dataclass(frozen=True)
class BranchView:
    id: str
    name: str
    city: str
    district: str
    address: str
    hours: str
    phone: str
    services: str


def _stem(place: str) -> str:
    for suffix in _SUFFIXES:
        if place.endswith(suffix) and len(place) > len(suffix) + 1:
            return place[: -len(suffix)]
    return place


def _view(branch: Branch) -> BranchView:
    return BranchView(
        branch.id,
        branch.name,
        branch.city,
        branch.district,
        branch.address,
        branch.hours,
        branch.phone,
        branch.services,
    )


def _score(branch: Branch, text: str, cities_named: set[str]) -> int:
    """0: no match. A named other city excludes the branch; district beats city; address words count too."""
    if cities_named and _stem(branch.city) not in cities_named:
        return 0
    score = 0
    if _stem(branch.district) in text:
        score += 4
    if _stem(branch.city) in text:
        score += 2
    if score == 0 and len(text) >= 2 and (text in branch.address or text in branch.name):
        score += 1  # a landmark or street, e.g. 中关村, 陆家嘴
    return score


def find_branches(session: Session, location: str | None, limit: int = 3) -> list[BranchView]:
    """Best matches first; with no location, the first `limit` branches (the action should ask where)."""
    branches = list(session.scalars(select(Branch).order_by(Branch.city, Branch.district, Branch.id)))
    text = "".join(unicodedata.normalize("NFKC", location or "").split())
    if not text:
        return [_view(b) for b in branches[:limit]]
    cities_named = {_stem(b.city) for b in branches if _stem(b.city) in text}
    scored = [(score, b) for b in branches if (score := _score(b, text, cities_named)) > 0]
    scored.sort(key=lambda pair: -pair[0])  # stable: keeps city/district order among equals
    return [_view(b) for _, b in scored[:limit]]


def cities(session: Session) -> list[str]:
    return sorted(set(session.scalars(select(Branch.city))))
