"""``python -m napari_ssl_seg.cli``: what child processes run."""

import sys

from napari_ssl_seg.cli import main

sys.exit(main())
