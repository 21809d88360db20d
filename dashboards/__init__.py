"""The Streamlit dashboard (app.py) and the BI connection files (powerbi/, tableau/)."""
