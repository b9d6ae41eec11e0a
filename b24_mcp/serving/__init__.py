"""Serving MCP: the tools, strict arguments, the HTTP transport, the reaches into libraries."""
