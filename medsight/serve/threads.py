"""How many threads a served model's passes use.

A request's passes on a small model (a 28×28 CNN) finish in a few milliseconds: splitting one over
several threads gains little, while two requests each asking for every core make the threads wait on
one another (and spin) - under load that costs far more than it gains. So each request runs on one
thread by default and concurrent requests share the cores. Larger models (3D volumes) may want more.
"""

from __future__ import annotations

import os


def use_threads(threads: int) -> None:
    """Set torch's (and OpenMP's) thread count for this process and for worker processes it starts."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when a worker process imports it
    torch.set_num_threads(threads)
