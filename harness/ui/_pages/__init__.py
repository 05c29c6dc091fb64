"""The Streamlit app's pages, one module each (`harness/ui/app.py` wires the navigation). The package is not
named `pages`: Streamlit would take a `pages/` folder beside the app for its own multipage navigation."""
