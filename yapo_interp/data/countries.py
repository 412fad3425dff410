"""The paper's five language groups and fifteen cultural contexts (appendix D), with the names by
which a localized prompt may name each country (a non-localized prompt must use none of them)."""

from __future__ import annotations

WESTERN = "western"

LANGUAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "english": ("usa", "uk", "australia"),
    "spanish": ("spain", "mexico", "bolivia"),
    "portuguese": ("brazil", "portugal", "mozambique"),
    "arabic": ("egypt", "saudi_arabia", "levantine", "morocco"),
    "hindi": ("india", "nepal"),
}

COUNTRY_LANGUAGE: dict[str, str] = {
    country: language for language, countries in LANGUAGE_GROUPS.items() for country in countries
}

DISPLAY_NAMES: dict[str, str] = {
    "usa": "USA", "uk": "UK", "australia": "Australia",
    "spain": "Spain", "mexico": "Mexico", "bolivia": "Bolivia",
    "brazil": "Brazil", "portugal": "Portugal", "mozambique": "Mozambique",
    "egypt": "Egypt", "saudi_arabia": "Saudi Arabia", "levantine": "Levant", "morocco": "Morocco",
    "india": "India", "nepal": "Nepal", WESTERN: "Western",
}

ALIASES: dict[str, str] = {"ksa": "saudi_arabia", "saudi": "saudi_arabia", "us": "usa",
                           "united_states": "usa", "america": "usa", "britain": "uk",
                           "united_kingdom": "uk", "levant": "levantine", "lebanon": "levantine",
                           "syria": "levantine", "jordan": "levantine"}

# Substrings (case-insensitive) that name a country. A localized prompt must contain one of its
# country's forms; a non-localized prompt must contain none of its group's forms.
NAME_FORMS: dict[str, tuple[str, ...]] = {
    "usa": ("United States", "USA", "U.S.", "America"),
    "uk": ("United Kingdom", "UK", "Britain", "British", "England", "English", "Scotland", "Wales"),
    "australia": ("Australia", "Aussie"),
    "spain": ("España", "Espana", "Spain", "español", "española"),
    "mexico": ("México", "Mexico", "mexicano", "mexicana"),
    "bolivia": ("Bolivia", "boliviano", "boliviana"),
    "brazil": ("Brasil", "Brazil", "brasileiro", "brasileira"),
    "portugal": ("Portugal", "português", "portuguesa"),
    "mozambique": ("Moçambique", "Mocambique", "Mozambique", "moçambicano", "moçambicana"),
    "egypt": ("مصر", "مصري", "مصرية", "Egypt"),
    "saudi_arabia": ("السعودية", "سعودي", "سعودية", "Saudi"),
    "levantine": ("الشام", "شامي", "شامية", "لبنان", "سوريا", "الأردن", "فلسطين", "Levant"),
    "morocco": ("المغرب", "مغربي", "مغربية", "Morocco"),
    "india": ("भारत", "भारतीय", "इंडिया", "हिंदुस्तान", "India"),
    "nepal": ("नेपाल", "नेपाली", "Nepal"),
}


def normalise_country(name: str) -> str:
    """Canonical key for a country name typed by a user (``'Egypt'``, ``'KSA'`` -> keys)."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return ALIASES.get(key, key)


def all_countries() -> list[str]:
    """Every country of every language group, in group order."""
    return [country for countries in LANGUAGE_GROUPS.values() for country in countries]
