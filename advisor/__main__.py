"""`python -m advisor`: ask the questions (or read --answers) and print the recommendation."""

import sys

from advisor.cli import main

sys.exit(main())
