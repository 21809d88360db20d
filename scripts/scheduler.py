#!/usr/bin/env python3
"""The scheduler daemon: run the pipeline on the configured schedule. `--help` for the flags."""

import sys

from dwh.scheduler import main

if __name__ == "__main__":
    sys.exit(main())
