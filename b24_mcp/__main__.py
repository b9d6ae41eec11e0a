"""`python -m b24_mcp` runs the `b24-mcp` command."""

import sys

from b24_mcp.commands.cli import main

sys.exit(main())
