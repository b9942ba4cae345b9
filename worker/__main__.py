"""``python -m worker``: the same as the ``upsert-worker`` console script."""

from worker.cli import main

raise SystemExit(main())
