"""``python -m medsight.train [OPTIONS]``: ``medsight train``, as a module torchrun can start.

torchrun launches a Python module in every worker, and the workers must take exactly the options
``medsight train`` takes. So this entry point reuses the CLI's Typer command (and its one-line
error messages) rather than duplicating the options: it is the one place ``train`` reaches the CLI.
"""

import sys

from medsight.cli import main

sys.argv.insert(1, "train")
main()
