// Test-only bearer-token injector. NEVER deploy this.
//
// The official MCP conformance suite sends no Authorization header, and mymcp refuses every
// unauthenticated request (as it must). In CI this proxy sits in front of the real server
// and adds `Authorization: Bearer <token>` to each request; everything else — method, path,
// every other header including Host and Origin, the body, the status, the response headers
// and the (possibly streamed) response body — is passed through verbatim, so the server's
// Host/Origin checks see exactly what the suite sent. A client that goes away closes the
// upstream request too, so the server sees the cancellation.
//
// Usage: MYMCP_PROXY_TOKEN=tok_… node token-proxy.mjs <upstream-url> [listen-port]
// Prints "listening on http://127.0.0.1:<port>" once ready. Listens on loopback only.
import http from "node:http";

const upstream = new URL(process.argv[2] ?? "");
const token = process.env.MYMCP_PROXY_TOKEN;
if (!token) {
  console.error("token-proxy: MYMCP_PROXY_TOKEN is not set");
  process.exit(2);
}

// MYMCP_PROXY_LOG=1 logs each request's method, MCP-Protocol-Version and Mcp-Method.
const log = process.env.MYMCP_PROXY_LOG === "1";

const server = http.createServer((req, res) => {
  if (log) {
    const h = req.headers;
    console.error(`${req.method} ${req.url} version=${h["mcp-protocol-version"] ?? "-"} method=${h["mcp-method"] ?? "-"}`);
  }
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  const out = http.request(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers,
      setHost: false,
    },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
      answer.pipe(res);
    },
  );
  out.on("error", (e) => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
    res.end(`token-proxy: ${e.message}`);
  });
  req.pipe(out);
  res.on("close", () => out.destroy());
});
server.listen(Number(process.argv[3] ?? 0), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
