// How Claude Desktop turns an installed bundle into a launch command: the mcpb library's getMcpConfigForManifest,
// over the unpacked bundle's manifest and what the person entered. Prints the resolved mcp_config as JSON, or
// null when the host would not start the server (a required field is missing).
// Usage: node packaging/mcp_config.mjs <@anthropic-ai/mcpb package folder> <unpacked bundle> '<user config JSON>'
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, sep } from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, bundleDir, userConfig] = process.argv.slice(2);
const { getMcpConfigForManifest } = await import(pathToFileURL(join(packageDir, "dist", "index.js")).href);
const config = await getMcpConfigForManifest({
  manifest: JSON.parse(readFileSync(join(bundleDir, "manifest.json"), "utf8")),
  extensionPath: bundleDir,
  systemDirs: { HOME: homedir() },
  userConfig: JSON.parse(userConfig),
  pathSeparator: sep,
});
process.stdout.write(JSON.stringify(config ?? null) + "\n");
