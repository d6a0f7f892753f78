"""``python -m evalmesh.cli`` is the ``evalmesh`` command."""

import sys

from evalmesh.cli.main import main

sys.exit(main())
