"""Rendering what the store holds: the static HTML report and the Streamlit app (`harness/ui/app.py`)."""

from harness.ui import views
from harness.ui._report import diff_html, render, write_html
