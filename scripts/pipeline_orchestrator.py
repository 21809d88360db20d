#!/usr/bin/env python3
"""Run the e-commerce warehouse pipeline. `--help` lists the subcommands and flags."""

import sys

from dwh.cli import main

if __name__ == "__main__":
    sys.exit(main())
