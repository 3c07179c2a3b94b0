"""``python -m zumik.cli``: the same as the ``zumik`` command."""

import sys

from zumik.cli.main import main

sys.exit(main())
