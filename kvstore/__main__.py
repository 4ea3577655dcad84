"""`python -m kvstore`: the same as the `kvstore` command."""

import sys

from kvstore.cli.main import main

sys.exit(main())
