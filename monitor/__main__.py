"""`python -m monitor` = the `soundmon` command."""

import sys

from monitor.cli import main

sys.exit(main())
