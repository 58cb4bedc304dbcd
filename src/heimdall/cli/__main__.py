"""``python -m heimdall.cli``: the same as the ``heimdall`` command."""

from heimdall.cli import main

raise SystemExit(main())
