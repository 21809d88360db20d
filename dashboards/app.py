"""The dashboard: `make dashboard` (or `streamlit run dashboards/app.py`).

Reads the warehouse schema only, as the read-only role bi_reader (dashboards/access.py), on the
embedded PostgreSQL by default or the server named by DATABASE_URL; the data-quality and
pipeline-health pages read the run ledger through its warehouse.v_* views
(sql/ddl/75_bi_ops_views.sql). Every page has its own
URL (/, /sales-trends, /products, /customers, /payments, /data-quality, /pipeline-health); the
sidebar filters apply to every page.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import streamlit as st  # noqa: E402

from dashboards import ui  # noqa: E402

PAGES = (
    ("views/overview.py", "Overview", "overview", ":material/dashboard:"),
    ("views/sales_trends.py", "Sales trends", "sales-trends", ":material/trending_up:"),
    ("views/products.py", "Products and categories", "products", ":material/inventory_2:"),
    ("views/customers.py", "Customers", "customers", ":material/group:"),
    ("views/payments.py", "Payments", "payments", ":material/payments:"),
    ("views/data_quality.py", "Data quality", "data-quality", ":material/verified:"),
    ("views/pipeline_health.py", "Pipeline health", "pipeline-health", ":material/monitor_heart:"),
)

st.set_page_config(page_title="E-commerce warehouse", page_icon=":bar_chart:", layout="wide")
navigation = st.navigation(
    [
        st.Page(path, title=title, url_path=url, icon=icon, default=(index == 0))
        for index, (path, title, url, icon) in enumerate(PAGES)
    ]
)
ui.build_context()
navigation.run()
