#!/usr/bin/env python
"""Write scikit-image's sample photos as a tiny ImageNet-style folder of real photos (``tasks.photo_folders``)."""
import sys

from tasks.photo_folders import main

if __name__ == "__main__":
    sys.exit(main())
