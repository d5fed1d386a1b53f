// End-to-end scenario with the official TypeScript MCP SDK client: list the tools, call each
// one, check every result. Run by tests/e2e/test_node_clients.py against a real server.
//
// Usage: node sdk-client.mjs <mcp-url> <token> <scratch-dir>
// Prints one JSON line {"ok": true, "protocolVersion", "tools", "calls"} and exits 0, or
// prints what failed and exits 1.
//
// The SDK validates each `structuredContent` against the tool's `outputSchema` itself (it
// fails the call otherwise); this script also checks that it equals the JSON of the text
// item, which the reference servers' clients parse.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import assert from "node:assert/strict";

const [url, token, dir] = process.argv.slice(2);
if (!url || !token || !dir) {
  console.error("usage: node sdk-client.mjs <mcp-url> <token> <scratch-dir>");
  process.exit(2);
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "mymcp-e2e-ts", version: "1.0.0" });
await client.connect(transport);

const calls = [];

/** Calls a tool that must succeed; returns its tool JSON. */
async function ok(name, args) {
  const result = await client.callTool({ name, arguments: args });
  assert.equal(result.isError, false, `${name}: ${JSON.stringify(result)}`);
  assert.equal(result.content.length, 1);
  assert.equal(result.content[0].type, "text");
  const json = JSON.parse(result.content[0].text);
  assert.deepEqual(result.structuredContent, json, `${name}: structuredContent is the tool JSON`);
  calls.push(name);
  return json;
}

try {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  for (const tool of tools) {
    assert.ok(tool.description && tool.title, `${tool.name}: description and title`);
    assert.equal(tool.inputSchema.type, "object");
    assert.equal(tool.outputSchema?.type, "object", `${tool.name}: outputSchema`);
    assert.equal(typeof tool.annotations?.readOnlyHint, "boolean");
  }
  const again = await client.listTools();
  assert.deepEqual(again.tools.map((t) => t.name), names, "deterministic order");

  const file = `${dir}/ts-sdk.txt`;
  let r = await ok("bash_execute", { command: "echo from-ts" });
  assert.equal(r.stdout, "from-ts\n");
  r = await ok("write_file", { file_path: file, content: "hello typescript\n" });
  assert.equal(r.bytes_written, 17);
  r = await ok("read_file", { file_path: file });
  assert.match(r.content, /hello typescript/);
  r = await ok("edit_file", { file_path: file, old_string: "hello", new_string: "bye" });
  assert.equal(r.replacements, 1);
  r = await ok("glob", { pattern: "*.txt", path: dir });
  assert.ok(r.files.includes(file), JSON.stringify(r));
  r = await ok("grep", { pattern: "bye", path: dir });
  assert.equal(r.match_count, 1);
  const job = await ok("bash_execute", { command: "echo job-out", background: true });
  assert.ok(job.job_id, JSON.stringify(job));
  r = await ok("job_output", { job_id: job.job_id, wait_seconds: 10 });
  assert.match(r.stdout, /job-out/);
  r = await ok("job_status", { job_id: job.job_id });
  assert.equal(r.job_id, job.job_id);
  r = await ok("job_kill", { job_id: job.job_id });
  assert.equal(r.running, false);
  r = await ok("prepare_upload", { dest_path: `${dir}/up.bin`, max_bytes: 10 });
  assert.equal(r.method, "PUT");
  r = await ok("prepare_download", { src_path: file });
  assert.equal(r.method, "GET");
  r = await ok("server_overview", {});
  assert.equal(r.success, true);
  assert.match(r.overview, /^# /);
  const term = await ok("terminal_open", { command: "cat" });
  const terminal_id = term.terminal_id;
  r = await ok("terminal_send", { terminal_id, text: "from-ts", keys: ["Enter"] });
  assert.equal(r.success, true);
  r = await ok("terminal_read", { terminal_id, wait_for: "from-ts", timeout: 10 });
  assert.equal(r.matched, true, JSON.stringify(r));
  r = await ok("terminal_resize", { terminal_id, rows: 30, cols: 100 });
  assert.equal(r.rows, 30);
  r = await ok("terminal_list", {});
  assert.ok(r.terminals.some((t) => t.terminal_id === terminal_id), JSON.stringify(r));
  r = await ok("terminal_close", { terminal_id });
  assert.equal(r.running, false);
  const missing = [...names].filter((n) => !calls.includes(n));
  assert.deepEqual(missing, [], "every listed tool was called");

  // A failure is a result with isError and the reference's JSON, also as structuredContent,
  // which the SDK validated against the tool's outputSchema (it describes failures too).
  const failed = await client.callTool({
    name: "read_file",
    arguments: { file_path: `${dir}/does-not-exist` },
  });
  assert.equal(failed.isError, true);
  assert.equal(JSON.parse(failed.content[0].text).error, "FileNotFoundError");
  assert.deepEqual(failed.structuredContent, JSON.parse(failed.content[0].text));
  // Arguments that do not match the input schema: the same shape.
  const invalid = await client.callTool({ name: "read_file", arguments: { limit: 1 } });
  assert.equal(invalid.isError, true);
  assert.equal(invalid.structuredContent.error, "InvalidArguments");
  assert.match(invalid.structuredContent.message, /'file_path' is a required property/);

  const info = {
    ok: true,
    protocolVersion: transport.protocolVersion,
    server: client.getServerVersion(),
    instructions: Boolean(client.getInstructions()),
    tools: names,
    calls,
  };
  console.log(JSON.stringify(info));
  await client.close();
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e), calls }));
  await client.close().catch(() => {});
  process.exit(1);
}
