"""The Streamlit app, from a checkout: `streamlit run app.py` (the same app `tunegate app` serves).

The app itself lives in harness/ui/app.py, so it ships in the wheel."""

from harness.ui.app import main

main()
