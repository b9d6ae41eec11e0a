// b24-mcp --sandbox driven by the TypeScript SDK's 1.x client (@modelcontextprotocol/sdk), the one many assistants
// embed. That client checks every result's structuredContent against the tool's outputSchema, errors included,
// and replaces one that does not conform with "-32602 Structured content does not match the tool's output
// schema". This calls each tool with good and bad arguments, the person declining and accepting, and exits 1 when
// any call fails that way.
//
//   npm install @modelcontextprotocol/sdk@1
//   node examples/typescript-client-v1.mjs
//
// B24_MCP_COMMAND names the server command (default: b24-mcp on PATH); B24_CONFIRM=token (or none) tries that mode.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const transport = new StdioClientTransport({
  command: process.env.B24_MCP_COMMAND ?? 'b24-mcp', args: ['--sandbox'], stderr: 'pipe',
  env: { ...process.env, B24_CONFIRM: process.env.B24_CONFIRM ?? 'auto' },
});
const client = new Client({ name: 'ts1-interop', version: '1.0.0' }, { capabilities: { elicitation: {} } });
let reply = 'decline';
client.setRequestHandler(ElicitRequestSchema, async () =>
  reply === 'accept' ? { action: 'accept', content: { delete: true } } : { action: reply });
await client.connect(transport);
const { tools } = await client.listTools();
console.log('tools:', tools.map((t) => `${t.name}${t.outputSchema ? ' (outputSchema)' : ''}`).join(', '));

let failures = 0;
async function call(label, name, args, answer = 'decline') {
  reply = answer;
  try {
    const r = await client.callTool({ name, arguments: args });
    const s = r.structuredContent ?? {};
    console.log(`ok   ${label}: ${r.isError ? 'isError ' : ''}${s.status} ${s.error ?? ''}`);
    return s;
  } catch (error) {
    failures += 1;
    console.log(`FAIL ${label}: ${error.code} ${error.message.slice(0, 300)}`);
    return {};
  }
}

await call('types', 'crm_entity_types', {});
await call('types, an argument', 'crm_entity_types', { entityTypeId: 2 });
await call('preview', 'crm_item_delete', { entityTypeId: 2, id: 42 });
await call('preview, absent', 'crm_item_delete', { entityTypeId: 2, id: 999 });
await call('preview, unknown type', 'crm_item_delete', { entityTypeId: 999999, id: 1 });
await call('a string id', 'crm_item_delete', { entityTypeId: 2, id: '42' });
await call('no id', 'crm_item_delete', { entityTypeId: 2 });
await call('an unknown argument', 'crm_item_delete', { entityTypeId: 2, id: 42, force: true });
await call('a bad token', 'crm_item_delete', { entityTypeId: 2, id: 42, dryRun: false, confirmationToken: 'x' });
await call('delete, declined', 'crm_item_delete', { entityTypeId: 2, id: 42, dryRun: false }, 'decline');
await call('delete, cancelled', 'crm_item_delete', { entityTypeId: 2, id: 42, dryRun: false }, 'cancel');
await call('delete, accepted', 'crm_item_delete', { entityTypeId: 2, id: 42, dryRun: false }, 'accept');
await call('delete again', 'crm_item_delete', { entityTypeId: 2, id: 42, dryRun: false }, 'accept');
await call('batch preview', 'crm_item_delete_batch', { entityTypeId: 1, ids: [11, 12, 99] });
await call('batch filter preview', 'crm_item_delete_batch', { entityTypeId: 2, filter: { '@stageId': ['NEW', 'WON'] } });
await call('batch, ids and filter', 'crm_item_delete_batch', { entityTypeId: 1, ids: [11], filter: { stageId: 'NEW' } });
await call('batch, neither', 'crm_item_delete_batch', { entityTypeId: 1 });
await call('batch, ids as a string', 'crm_item_delete_batch', { entityTypeId: 1, ids: '[11,12]' });
await call('batch, a bad filter', 'crm_item_delete_batch', { entityTypeId: 1, filter: { logic: 'OR' } });
await call('batch, declined', 'crm_item_delete_batch', { entityTypeId: 1, ids: [11, 12], dryRun: false }, 'decline');
await call('batch, accepted', 'crm_item_delete_batch', { entityTypeId: 1, ids: [11, 12, 99], dryRun: false }, 'accept');
await call('batch by filter, accepted', 'crm_item_delete_batch',
  { entityTypeId: 2, filter: { stageId: 'WON' }, dryRun: false }, 'accept');
await client.close();
console.log(failures ? `${failures} calls failed` : 'every result matched its output schema');
process.exit(failures ? 1 : 0);
