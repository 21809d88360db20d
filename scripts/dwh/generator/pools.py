"""Value pools the generator samples from: Faker draws a few thousand names, cities, streets,
brands and colour words once per seed, numpy then samples them by index, so the cost of Faker
does not grow with the number of rows. Fixed vocabularies (sub-categories, product nouns, state
populations, weights of the realistic distributions) live here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from faker import Faker

from dwh.contract import AGE_GROUPS, CATEGORIES, PAYMENT_METHODS

# (state, abbreviation, population in millions, 2020 census rounded): customers are spread by it.
STATES: tuple[tuple[str, str, float], ...] = (
    ("Alabama", "AL", 5.0), ("Alaska", "AK", 0.7), ("Arizona", "AZ", 7.2),
    ("Arkansas", "AR", 3.0), ("California", "CA", 39.5), ("Colorado", "CO", 5.8),
    ("Connecticut", "CT", 3.6), ("Delaware", "DE", 1.0), ("Florida", "FL", 21.5),
    ("Georgia", "GA", 10.7), ("Hawaii", "HI", 1.5), ("Idaho", "ID", 1.8),
    ("Illinois", "IL", 12.8), ("Indiana", "IN", 6.8), ("Iowa", "IA", 3.2),
    ("Kansas", "KS", 2.9), ("Kentucky", "KY", 4.5), ("Louisiana", "LA", 4.7),
    ("Maine", "ME", 1.4), ("Maryland", "MD", 6.2), ("Massachusetts", "MA", 7.0),
    ("Michigan", "MI", 10.1), ("Minnesota", "MN", 5.7), ("Mississippi", "MS", 3.0),
    ("Missouri", "MO", 6.2), ("Montana", "MT", 1.1), ("Nebraska", "NE", 2.0),
    ("Nevada", "NV", 3.1), ("New Hampshire", "NH", 1.4), ("New Jersey", "NJ", 9.3),
    ("New Mexico", "NM", 2.1), ("New York", "NY", 20.2), ("North Carolina", "NC", 10.4),
    ("North Dakota", "ND", 0.8), ("Ohio", "OH", 11.8), ("Oklahoma", "OK", 4.0),
    ("Oregon", "OR", 4.2), ("Pennsylvania", "PA", 13.0), ("Rhode Island", "RI", 1.1),
    ("South Carolina", "SC", 5.1), ("South Dakota", "SD", 0.9), ("Tennessee", "TN", 6.9),
    ("Texas", "TX", 29.1), ("Utah", "UT", 3.3), ("Vermont", "VT", 0.6),
    ("Virginia", "VA", 8.6), ("Washington", "WA", 7.7), ("West Virginia", "WV", 1.8),
    ("Wisconsin", "WI", 5.9), ("Wyoming", "WY", 0.6),
)  # fmt: skip
STATE_ABBR: dict[str, str] = {name: abbr for name, abbr, _ in STATES}

# Sub-categories of each canonical category, and nouns that product names are made of.
SUB_CATEGORIES: dict[str, dict[str, tuple[str, ...]]] = {
    "Electronics": {
        "Smartphones": ("Smartphone", "Phone", "Mini Phone"),
        "Laptops": ("Laptop", "Notebook", "Ultrabook", "Chromebook"),
        "Audio": ("Headphones", "Earbuds", "Speaker", "Soundbar"),
        "Cameras": ("Camera", "Action Camera", "Lens", "Tripod"),
        "Accessories": ("Charger", "Power Bank", "USB-C Cable", "Phone Case", "Keyboard"),
        "Smart Home": ("Smart Plug", "Smart Bulb", "Doorbell Camera", "Thermostat"),
    },
    "Clothing": {
        "Tops": ("T-Shirt", "Shirt", "Blouse", "Sweater", "Hoodie"),
        "Bottoms": ("Jeans", "Chinos", "Shorts", "Skirt", "Leggings"),
        "Outerwear": ("Jacket", "Raincoat", "Parka", "Vest"),
        "Footwear": ("Sneakers", "Boots", "Sandals", "Loafers"),
        "Accessories": ("Belt", "Scarf", "Cap", "Gloves", "Socks"),
    },
    "Home & Kitchen": {
        "Cookware": ("Frying Pan", "Saucepan", "Dutch Oven", "Wok"),
        "Appliances": ("Blender", "Toaster", "Coffee Maker", "Air Fryer", "Kettle"),
        "Bedding": ("Duvet Cover", "Pillow", "Sheet Set", "Blanket"),
        "Furniture": ("Bookshelf", "Desk", "Office Chair", "Side Table"),
        "Decor": ("Table Lamp", "Wall Clock", "Vase", "Picture Frame", "Candle"),
    },
    "Books": {
        "Fiction": ("Novel", "Thriller", "Mystery", "Short Stories"),
        "Non-Fiction": ("Biography", "History Book", "Memoir", "Essay Collection"),
        "Children": ("Picture Book", "Activity Book", "Bedtime Stories"),
        "Education": ("Textbook", "Study Guide", "Workbook", "Dictionary"),
        "Comics": ("Graphic Novel", "Comic Book", "Manga Volume"),
    },
    "Sports": {
        "Fitness": ("Dumbbell Set", "Yoga Mat", "Resistance Bands", "Kettlebell"),
        "Outdoor": ("Tent", "Sleeping Bag", "Hiking Backpack", "Water Bottle"),
        "Team Sports": ("Football", "Basketball", "Soccer Ball", "Baseball Glove"),
        "Cycling": ("Bike Helmet", "Bike Light", "Cycling Gloves", "Bike Lock"),
        "Running": ("Running Shoes", "Running Belt", "Sports Watch"),
    },
    "Beauty": {
        "Skincare": ("Moisturizer", "Face Serum", "Sunscreen", "Cleanser"),
        "Makeup": ("Lipstick", "Mascara", "Foundation", "Eyeliner"),
        "Haircare": ("Shampoo", "Conditioner", "Hair Dryer", "Hair Oil"),
        "Fragrance": ("Eau de Parfum", "Body Mist", "Cologne"),
        "Personal Care": ("Electric Toothbrush", "Razor", "Body Wash"),
    },
}
ADJECTIVES: tuple[str, ...] = (
    "Classic", "Essential", "Premium", "Ultra", "Compact", "Pro", "Deluxe", "Smart",
    "Eco", "Everyday", "Signature", "Lightweight", "Heritage", "Urban", "Max", "Original",
)  # fmt: skip
BRAND_SUFFIXES: tuple[str, ...] = (
    "", "", " Labs", " Works", " & Co", " Goods", " Studio", " Supply", " Home", " Gear",
)  # fmt: skip
EMAIL_DOMAINS: tuple[tuple[str, float], ...] = (
    ("gmail.com", 0.38), ("yahoo.com", 0.16), ("hotmail.com", 0.10), ("outlook.com", 0.12),
    ("icloud.com", 0.09), ("aol.com", 0.03), ("protonmail.com", 0.02), ("example.com", 0.10),
)  # fmt: skip

# Share of each category among products; median price in dollars and log-spread of prices.
CATEGORY_P = np.array([0.20, 0.22, 0.18, 0.14, 0.14, 0.12])
CATEGORY_PRICE = {
    "Electronics": (120.0, 0.9),
    "Clothing": (35.0, 0.6),
    "Home & Kitchen": (45.0, 0.8),
    "Books": (16.0, 0.45),
    "Sports": (40.0, 0.8),
    "Beauty": (22.0, 0.6),
}
AGE_P = np.array([0.19, 0.31, 0.24, 0.17, 0.09])
PAYMENT_P = np.array([0.36, 0.22, 0.17, 0.10, 0.15])
DISCOUNT_P = np.array([0.62, 0.18, 0.12, 0.08])
QUANTITY_P = np.array([0.58, 0.22, 0.10, 0.06, 0.04])  # quantities 1..5
# Orders per hour of day (local time): quiet at night, lunch bump, evening peak.
HOUR_W = np.array(
    [0.3, 0.2, 0.12, 0.1, 0.1, 0.18, 0.35, 0.6, 0.9, 1.1, 1.2, 1.3,
     1.45, 1.35, 1.2, 1.2, 1.3, 1.45, 1.65, 1.9, 2.0, 1.8, 1.3, 0.7]
)  # fmt: skip
HOUR_P = HOUR_W / HOUR_W.sum()
WEEKDAY_W = np.array([0.88, 0.86, 0.9, 0.95, 1.05, 1.32, 1.24])  # Monday .. Sunday
MONTH_W = np.array([0.9, 0.85, 0.95, 0.95, 1.0, 0.98, 1.0, 1.02, 0.95, 1.0, 1.3, 1.6])

assert len(CATEGORY_P) == len(CATEGORIES)
assert len(AGE_P) == len(AGE_GROUPS) and len(PAYMENT_P) == len(PAYMENT_METHODS)


def quote(value: str) -> str:
    """A CSV field (RFC 4180, minimal quoting): quoted only when it holds , " CR or LF."""
    if "," in value or '"' in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def _email_part(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower()) or "user"


@dataclass(frozen=True)
class Pools:
    """Faker-drawn value pools. `*_q` lists are CSV-quoted, `*_in` are escaped for use inside an
    already-quoted field (the shipping address)."""

    first: list[str]
    first_q: list[str]
    first_email: list[str]
    last: list[str]
    last_q: list[str]
    last_email: list[str]
    street_in: list[str]
    loc_city: list[str]
    loc_state: list[str]  # index into STATES
    brands: list[str]
    words: list[str]
    domains: list[str]
    domain_p: np.ndarray


@lru_cache(maxsize=4)
def build_pools(seed: int) -> Pools:
    """Draw the pools with a Faker seeded by `seed` (deterministic for one Faker version)."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    first = [fake.first_name() for _ in range(1000)]
    last = [fake.last_name() for _ in range(1000)]
    streets = [fake.street_name() for _ in range(800)]
    cities = [fake.city() for _ in range(1200)]
    state_p = np.array([s[2] for s in STATES])
    state_rng = np.random.default_rng([seed, 7])
    loc_state = state_rng.choice(len(STATES), size=len(cities), p=state_p / state_p.sum())
    brands = [fake.last_name() + fake.random_element(BRAND_SUFFIXES) for _ in range(250)]
    colours = sorted({re.sub(r"(?<=[a-z])(?=[A-Z])", " ", fake.color_name()) for _ in range(60)})
    domains = [d for d, _ in EMAIL_DOMAINS]
    domain_p = np.array([p for _, p in EMAIL_DOMAINS])
    return Pools(
        first=first,
        first_q=[quote(v) for v in first],
        first_email=[_email_part(v) for v in first],
        last=last,
        last_q=[quote(v) for v in last],
        last_email=[_email_part(v) for v in last],
        street_in=[v.replace('"', '""') for v in streets],
        loc_city=cities,
        loc_state=[int(i) for i in loc_state],
        brands=brands,
        words=list(ADJECTIVES) + colours,
        domains=domains,
        domain_p=domain_p / domain_p.sum(),
    )


def email_part(name: str) -> str:
    """The letters of a name as used in an email address."""
    return _email_part(name)
