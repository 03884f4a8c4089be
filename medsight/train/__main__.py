"""``python -m medsight.train [OPTIONS]``: ``medsight train``, as a module torchrun can start.

torchrun launches a Python module in every worker, and the workers must take exactly the options
``medsight train`` takes. So this entry point reuses the CLI's Typer command (and its one-line
error messages) rather than duplicating the options: it is the one place ``train`` reaches the CLI.

A worker leaves with ``os._exit`` once its work is done and written (files are written atomically
and closed by then): interpreter finalisation after a gloo process group can abort the process
and fail a run that has succeeded.
"""

import os
import sys

from medsight.cli import main

sys.argv.insert(1, "train")
try:
    main()
    code = 0
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
