"""Worker processes: `python -m harness.run UNIT.json` runs one job (a TrialJob as JSON) and exits (see _executors.py);
`python -m harness.run --serve REPLY_FD` is a persistent worker that runs jobs read from stdin (see _worker_loop.py)."""

import sys

if len(sys.argv) == 3 and sys.argv[1] == "--serve":
    from harness.run._worker_loop import serve

    sys.exit(serve(int(sys.argv[2])))
from harness.run._executors import main

sys.exit(main(sys.argv[1:]))
