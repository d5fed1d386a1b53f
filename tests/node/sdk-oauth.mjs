// The official TypeScript MCP SDK's OAuth client against a real server with OAuth on: the SDK
// discovers the authorization server from the 401, registers (RFC 7591), sends the person to
// the consent page, and after the approval exchanges the code and calls a tool. Run by
// tests/e2e/test_node_clients.py, which plays the person (the consent page and
// `mymcpctl oauth approve`).
//
// Usage: node sdk-oauth.mjs <mcp-url> <redirect-uri>
// Prints `AUTHORIZE <url>` when the SDK sends the person to the authorization page, reads the
// code from the redirect as one line on stdin, then prints one JSON line
// {"ok": true, "stdout": …, "refreshed": …} and exits 0, or prints what failed and exits 1.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { createInterface } from "node:readline";

const [url, redirect] = process.argv.slice(2);
if (!url || !redirect) {
  console.error("usage: node sdk-oauth.mjs <mcp-url> <redirect-uri>");
  process.exit(2);
}

/** What an application keeps for the SDK: its registration, tokens and PKCE verifier. */
class Provider {
  get redirectUrl() {
    return redirect;
  }
  get clientMetadata() {
    return {
      client_name: "ts sdk e2e",
      redirect_uris: [redirect],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info) {
    this.client = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens) {
    this.saved = tokens;
  }
  redirectToAuthorization(authorizationUrl) {
    console.log(`AUTHORIZE ${authorizationUrl.href}`);
  }
  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function connected(provider) {
  const client = new Client({ name: "mymcp-e2e-ts-oauth", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { authProvider: provider }));
  return client;
}

async function whoami(client) {
  const r = await client.callTool({ name: "bash_execute", arguments: { command: "id -un" } });
  if (r.isError) throw new Error(JSON.stringify(r));
  return JSON.parse(r.content[0].text).stdout;
}

try {
  const provider = new Provider();
  const first = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  try {
    await new Client({ name: "mymcp-e2e-ts-oauth", version: "1.0.0" }).connect(first);
    throw new Error("connected without authorization");
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
  }
  const code = (await lines.next()).value.trim();
  await first.finishAuth(code);
  const stdout = await whoami(await connected(provider));

  // An access token that no longer works: the SDK refreshes with its refresh token.
  const refreshToken = provider.saved.refresh_token;
  provider.saved = { ...provider.saved, access_token: "mcp_" + "0".repeat(64) };
  const again = await whoami(await connected(provider));
  const refreshed = provider.saved.refresh_token !== refreshToken;
  console.log(JSON.stringify({ ok: true, stdout, again, refreshed }));
  process.exit(0);
} catch (e) {
  console.log(`FAILED ${e?.stack ?? e}`);
  process.exit(1);
}
