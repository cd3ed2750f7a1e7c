"""`python -m semroute.cli`: the same as the `semroute` command."""

from __future__ import annotations

import sys

from semroute.cli import main

sys.exit(main())
