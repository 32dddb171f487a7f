#!/usr/bin/env python
"""Throughput and peak memory of the ZAQ loop, fake quantization on and off (``zaqbench bench``)."""
import sys

from zaqbench.run.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("bench"))
