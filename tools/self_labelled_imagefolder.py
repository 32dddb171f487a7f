#!/usr/bin/env python
"""Plumbing check for a classification checkpoint without any real photos (``tasks.self_labelled_folder``)."""
import sys

from tasks.self_labelled_folder import main

if __name__ == "__main__":
    sys.exit(main())
