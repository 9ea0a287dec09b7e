#!/usr/bin/env python3
"""Run a distributed (dist_sync / dist_async) MXNet job on this machine, on 127.0.0.1 only.

Starts a scheduler, servers and workers with the DMLC_* variables set, kills everything it
started on failure or timeout. A thin command line over binmx.distributed.launch:

    python tools/launch_local.py -n 2 -s 1 --timeout 900 -- \\
        python examples/train_mnist.py --kv-store dist_sync
"""

from __future__ import annotations

import sys

from binmx.distributed import main

if __name__ == "__main__":
    sys.exit(main())
