"""The bare server with b24-mcp's one start-up trick and nothing else: the garbage collector paused while the SDK is
imported and the server built, then frozen and resumed before serving (as `b24_mcp.commands.cli` does). Against the bare
server it shows the lowest cold-start ratio the trick alone gives, before any work of b24-mcp's own."""

import gc

gc.disable()

from mcp.server.mcpserver import MCPServer  # noqa: E402 (imported with the collector paused, on purpose)

if __name__ == "__main__":
    server = MCPServer("bare")
    gc.freeze()
    gc.enable()
    server.run()
