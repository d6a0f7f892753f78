"""``python -m chaos``: run the chaos campaign and write the report."""

from chaos.cli import main

raise SystemExit(main())
