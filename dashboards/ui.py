"""Shared Streamlit parts: the connection (cached), cached queries, the sidebar filters, the
"no data yet" messages and number formatting. Pages call `page_context()` first."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from dashboards import queries
from dashboards.access import Access, Endpoint, resolve_access
from dashboards.queries import Filters
from dwh.exceptions import first_line

CACHE_TTL_S = 60
"""Seconds a query result is reused (the pipeline loads at most every few minutes)."""
ACCESS_TTL_S = 300
"""Seconds the connection decision (bi_reader login, SET ROLE, fallback) is reused."""
DEFAULT_DAYS = 365
"""Default date range: this many days up to the latest order date."""

LOAD_HELP = """\
The warehouse has no sales yet. Load data, then reload this page:

```bash
make run                         # embedded PostgreSQL: generate a batch and run every stage
# or, on your own server:
DATABASE_URL=postgresql://user:password@host:5432/db make run
```

`make run ARGS="--next-batch"` adds the next business day. See README.md.
"""


@dataclass
class Context:
    """What a page needs: where to read, what exists, and the filters."""

    access: Access
    relations: frozenset[str]
    filters: Filters | None = None
    options: dict[str, list[str]] = field(default_factory=dict)

    @property
    def has_sales(self) -> bool:
        return self.filters is not None

    @property
    def has_ops(self) -> bool:
        """The run ledger's views exist (sql/ddl/75_bi_ops_views.sql, applied by every run)."""
        return "warehouse.v_pipeline_runs" in self.relations


# ─── connection and cached queries ───────────────────────────────────────────────────────────


def _base_url() -> tuple[str, Any]:
    """The pipeline's URL (starts the embedded server when no URL is configured)."""
    from dwh.db import resolve_url
    from dwh.settings import load_settings

    settings = load_settings(os.environ.get("DWH_CONFIG") or None)
    return resolve_url(settings), settings


@st.cache_resource(ttl=ACCESS_TTL_S, show_spinner="Connecting to the warehouse…")
def _access(database_url: str | None, config: str | None) -> Access:
    url, settings = _base_url()
    return resolve_access(settings, url)


def get_access() -> Access:
    # Keyed by the configuration so a changed DATABASE_URL is picked up.
    return _access(os.environ.get("DATABASE_URL"), os.environ.get("DWH_CONFIG"))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def cached(name: str, endpoint: Endpoint, *args: Any) -> Any:
    """queries.<name>(endpoint, *args), reused for CACHE_TTL_S seconds."""
    function: Callable[..., Any] = getattr(queries, name)
    return function(endpoint, *args)


# ─── context and sidebar ─────────────────────────────────────────────────────────────────────


def _connection_failed(exc: Exception) -> None:
    reason = first_line(exc)
    st.error(
        f"Cannot reach the database: {reason}\n\n"
        "Start the embedded server with `make db-start` (or `make run` to load data), or set "
        "DATABASE_URL to your server, then reload."
    )
    st.stop()


def build_context() -> Context:
    """Connect (cached), find what exists, draw the sidebar filters; stored in session state."""
    try:
        access = get_access()
        relations = cached("relations", access.warehouse)
    except Exception as exc:  # an unreachable server is a message, not a traceback
        _connection_failed(exc)
        raise  # st.stop() raised already; keeps type checkers calm
    context = Context(access=access, relations=relations)
    sidebar = st.sidebar
    sidebar.caption(
        "Reading as **bi_reader** (read-only)"
        if access.as_bi_reader
        else "Reading **read-only** as the pipeline's user"
    )
    for note in access.notes:
        sidebar.warning(note, icon="ℹ️")
    if {"warehouse.fact_sales", "warehouse.agg_daily_sales"} <= relations:
        first, last = cached("data_range", access.warehouse)
        if first is not None and last is not None:
            context.options = cached("filter_options", access.warehouse)
            context.filters = _filters(sidebar, first, last, context.options)
    if sidebar.button("Refresh data", help=f"Query results are reused for {CACHE_TTL_S} s"):
        st.cache_data.clear()
        st.cache_resource.clear()
        st.rerun()
    st.session_state["dwh_context"] = context
    return context


def _filters(sidebar: Any, first: dt.date, last: dt.date, options: dict[str, list[str]]) -> Filters:
    sidebar.header("Filters")
    default_start = max(first, last - dt.timedelta(days=DEFAULT_DAYS - 1))
    chosen = sidebar.date_input(
        "Order dates",
        value=(default_start, last),
        min_value=first,
        max_value=last,
        key="filter_dates",
        help="Overview compares with the period of the same length just before.",
    )
    if isinstance(chosen, (tuple, list)) and len(chosen) == 2:
        start, end = chosen
    else:  # a half-picked range: use the start day alone until the end is picked
        start = end = chosen[0] if isinstance(chosen, (tuple, list)) and chosen else last
    cats = sidebar.multiselect("Category", options.get("category", []), key="filter_category")
    states = sidebar.multiselect("State", options.get("state", []), key="filter_state")
    segments = sidebar.multiselect(
        "Customer segment", options.get("segment", []), key="filter_segment"
    )
    sidebar.caption(f"Data from {first:%Y-%m-%d} to {last:%Y-%m-%d}.")
    return Filters(
        start=start,
        end=end,
        categories=tuple(cats),
        states=tuple(states),
        segments=tuple(segments),
        data_start=first,
        data_end=last,
    )


def page_context(title: str, *, needs: str = "sales") -> Context:
    """The context built by the app for this run; draws the page title; stops the page with a
    how-to message when the data it needs (sales or ops) is not there yet."""
    context: Context | None = st.session_state.get("dwh_context")
    if context is None:
        context = build_context()
    st.title(title)
    if needs == "sales" and not context.has_sales:
        st.info(LOAD_HELP)
        st.stop()
    if needs == "ops" and not context.has_ops:
        st.info(
            "No pipeline run is recorded yet (the run ledger's views in the warehouse schema "
            "appear with the first run).\n\n" + LOAD_HELP
        )
        st.stop()
    return context


def slice_caption(filters: Filters) -> str:
    parts = [f"{filters.start:%Y-%m-%d} – {filters.end:%Y-%m-%d}"]
    for label, values in (
        ("category", filters.categories),
        ("state", filters.states),
        ("segment", filters.segments),
    ):
        if values:
            parts.append(f"{label}: {', '.join(values)}")
    return " · ".join(parts)


# ─── formatting ──────────────────────────────────────────────────────────────────────────────


def money(value: float) -> str:
    return f"{value:,.2f}"


def count(value: float) -> str:
    return f"{int(value):,}"


def change(current: float, previous: float) -> str | None:
    """'+12.3%' against the previous period, or None when there is nothing to compare with."""
    if not previous:
        return None
    return f"{(current - previous) / abs(previous) * 100:+.1f}%"
