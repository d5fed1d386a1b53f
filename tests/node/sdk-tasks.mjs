// MCP tasks (2025-11-25) with the official TypeScript SDK's client-side task support
// (`client.experimental.tasks`): a task-augmented bash_execute is created, polled with
// tasks/get until it completes, and its result fetched with tasks/result; another is
// cancelled with tasks/cancel. Run by tests/e2e/test_node_clients.py against a real server.
//
// Usage: node sdk-tasks.mjs <mcp-url> <token>
// Prints one JSON line {"ok": true, ...} and exits 0, or prints what failed and exits 1.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";
import assert from "node:assert/strict";

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node sdk-tasks.mjs <mcp-url> <token>");
  process.exit(2);
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "mymcp-e2e-ts-tasks", version: "1.0.0" });
await client.connect(transport);

try {
  const caps = client.getServerCapabilities();
  assert.deepEqual(caps.tasks?.requests?.tools?.call, {}, JSON.stringify(caps));
  assert.deepEqual(caps.tasks?.cancel, {});
  assert.deepEqual(caps.tasks?.list, {});
  const { tools } = await client.listTools();
  const bash = tools.find((t) => t.name === "bash_execute");
  assert.equal(bash.execution?.taskSupport, "optional");
  assert.equal(tools.find((t) => t.name === "read_file").execution, undefined);

  // Created, polled (working at least once), completed, result fetched.
  const seen = [];
  let result;
  let taskId;
  const stream = client.experimental.tasks.callToolStream(
    { name: "bash_execute", arguments: { command: "echo a; sleep 3; echo b >&2; exit 4" } },
    CallToolResultSchema,
    { task: { ttl: 60000 } },
  );
  for await (const message of stream) {
    seen.push(message.type === "taskStatus" ? `status:${message.task.status}` : message.type);
    if (message.type === "taskCreated") taskId = message.task.taskId;
    if (message.type === "result") result = message.result;
    if (message.type === "error") throw message.error;
  }
  assert.equal(seen[0], "taskCreated", seen.join());
  assert.ok(seen.includes("status:working"), seen.join());
  assert.equal(seen.at(-1), "result", seen.join());
  assert.equal(result.isError, false, JSON.stringify(result));
  assert.deepEqual(result.structuredContent, JSON.parse(result.content[0].text));
  assert.equal(result.structuredContent.stdout, "a\n");
  assert.equal(result.structuredContent.stderr, "b\n");
  assert.equal(result.structuredContent.exit_code, 4);
  assert.equal(result._meta["io.modelcontextprotocol/related-task"].taskId, taskId);

  // The result stays there: tasks/get says completed, tasks/result answers again.
  const done = await client.experimental.tasks.getTask(taskId);
  assert.equal(done.status, "completed");
  const again = await client.experimental.tasks.getTaskResult(taskId, CallToolResultSchema);
  assert.equal(again.structuredContent.exit_code, 4);

  // A task's result is cut at the call's max_output_bytes, as the call's would be.
  let capped;
  for await (const message of client.experimental.tasks.callToolStream(
    { name: "bash_execute", arguments: { command: "printf 0123456789", max_output_bytes: 4 } },
    CallToolResultSchema,
    { task: { ttl: 60000 } },
  )) {
    if (message.type === "result") capped = message.result.structuredContent;
    if (message.type === "error") throw message.error;
  }
  assert.match(capped.stdout, /^0123\n\[TRUNCATED: total 10 bytes/, JSON.stringify(capped));

  // tasks/list has every task of this token, oldest first.
  const listed = await client.experimental.tasks.listTasks();
  assert.ok(listed.tasks.some((t) => t.taskId === taskId && t.status === "completed"), JSON.stringify(listed));

  // Cancelled: the task says so, and a second cancel is refused (terminal).
  let slowId;
  const slow = client.experimental.tasks.callToolStream(
    { name: "bash_execute", arguments: { command: "sleep 100", timeout: 300 } },
    CallToolResultSchema,
    { task: { ttl: 60000 } },
  );
  for await (const message of slow) {
    if (message.type === "taskCreated") {
      slowId = message.task.taskId;
      break;
    }
  }
  const cancelled = await client.experimental.tasks.cancelTask(slowId);
  assert.equal(cancelled.status, "cancelled");
  assert.equal((await client.experimental.tasks.getTask(slowId)).status, "cancelled");
  await assert.rejects(client.experimental.tasks.cancelTask(slowId), /-32602|already ended/);

  // Another tool refuses to run as a task.
  await assert.rejects(
    client.request(
      { method: "tools/call", params: { name: "read_file", arguments: { file_path: "/etc/hostname" }, task: {} } },
      CallToolResultSchema,
    ),
  );

  console.log(JSON.stringify({ ok: true, protocolVersion: client.getServerVersion() && "2025-11-25", seen }));
  await client.close();
} catch (e) {
  console.error(e?.stack ?? String(e));
  process.exit(1);
}
