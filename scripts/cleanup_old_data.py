#!/usr/bin/env python3
"""Retention: remove data older than the configured ages (never unpromoted data). `--help`."""

import sys

from dwh.cleanup import main

if __name__ == "__main__":
    sys.exit(main())
