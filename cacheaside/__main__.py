"""``python -m cacheaside demo``."""

from .cli import main

raise SystemExit(main())
