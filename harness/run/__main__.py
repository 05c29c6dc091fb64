"""`python -m harness.run UNIT.json`: a worker process runs one trial unit (see harness/run/_executors.py)."""
import sys

from harness.run._executors import main

sys.exit(main(sys.argv[1:]))
