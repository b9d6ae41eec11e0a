"""A bare MCP server with no tools, on the same SDK: the baseline for the cold-start and memory figures."""

from mcp.server.mcpserver import MCPServer

if __name__ == "__main__":
    MCPServer("bare").run()
