"""The command line: `b24-mcp` and its commands (check, demo, journal, db, people)."""
