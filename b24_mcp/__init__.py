"""b24-mcp: an MCP server that deletes Bitrix24 CRM items, guarded by a preview and a confirmation."""

__version__ = "0.1.0"
