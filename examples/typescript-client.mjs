// b24-mcp --sandbox driven by another maker's client: the TypeScript SDK's v2 client (@modelcontextprotocol/client).
// It lists the tools, previews, deletes (the person's answer comes from the elicitation handler below), repeats
// the deletion, sends a bad argument, and runs a small clean-up with a confirmation token.
//
//   npm install @modelcontextprotocol/client
//   node examples/typescript-client.mjs [accept|decline|cancel]      (B24_CONFIRM=token to use tokens only)
//
// B24_MCP_COMMAND names the server command (default: b24-mcp on PATH). MCP_NEGOTIATION=auto lets the client
// negotiate protocol 2026-07-28, where the question rides the call's own result (input_required).
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';

const answer = process.argv[2] ?? 'accept';
const transport = new StdioClientTransport({
  command: process.env.B24_MCP_COMMAND ?? 'b24-mcp', args: ['--sandbox'], stderr: 'pipe',
  env: { ...process.env, B24_CONFIRM: process.env.B24_CONFIRM ?? 'auto' },
});
const client = new Client({ name: 'ts-interop', version: '1.0.0' }, {
  capabilities: { elicitation: { form: {} } },
  versionNegotiation: { mode: process.env.MCP_NEGOTIATION === 'auto' ? 'auto' : 'legacy' },
});
const asked = [];
client.setRequestHandler('elicitation/create', async (request) => {
  asked.push(request.params.message);
  return answer === 'accept' ? { action: 'accept', content: { delete: true } } : { action: answer };
});
await client.connect(transport);
console.log('protocol:', client.getNegotiatedProtocolVersion?.() ?? '(unknown)', 'server:', JSON.stringify(client.getServerVersion()));
const { tools } = await client.listTools();
for (const t of tools) console.log('tool', t.name, 'outputSchema:', !!t.outputSchema, 'additionalProperties:', t.inputSchema.additionalProperties);
const show = (label, r) => console.log(label, r.isError ? 'ERROR' : 'ok', JSON.stringify(r.structuredContent).slice(0, 300));
show('types', await client.callTool({ name: 'crm_entity_types', arguments: {} }));
show('preview', await client.callTool({ name: 'crm_item_delete', arguments: { entityTypeId: 2, id: 42 } }));
show('delete', await client.callTool({ name: 'crm_item_delete', arguments: { entityTypeId: 2, id: 42, dryRun: false } }));
show('again', await client.callTool({ name: 'crm_item_delete', arguments: { entityTypeId: 2, id: 42, dryRun: false } }));
show('bad args', await client.callTool({ name: 'crm_item_delete', arguments: { entityTypeId: '2', id: 43 } }));
const bulk = await client.callTool({ name: 'crm_item_delete_batch', arguments: { entityTypeId: 1, ids: [11, 12, 13, 99] } });
show('batch preview', bulk);
show('batch token', await client.callTool({ name: 'crm_item_delete_batch', arguments: { entityTypeId: 1, ids: [11, 12, 13, 99], dryRun: false, confirmationToken: bulk.structuredContent.confirmationToken } }));
console.log('questions asked:', asked.length);
for (const q of asked) console.log('  Q:', q.slice(0, 200).replace(/\n/g, ' | '));
await client.close();
