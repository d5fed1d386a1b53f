"""A scripted stand-in for the model APIs that coding CLIs talk to, served on loopback.

It speaks just enough of three APIs for a CLI to run one agentic turn against it:

- the Anthropic Messages API (`POST …/v1/messages`, streaming SSE or plain JSON, and
  `…/v1/messages/count_tokens`): Claude Code, with `ANTHROPIC_BASE_URL`;
- the Gemini API (`POST …/models/<model>:generateContent`, `:streamGenerateContent?alt=sse`,
  `:countTokens`): Gemini CLI, with `GOOGLE_GEMINI_BASE_URL`;
- the OpenAI Responses API (`POST …/responses`, streaming SSE) and Chat Completions
  (`POST …/chat/completions`): Codex CLI, with a `model_providers` entry.

The "model" follows a script: a list of tool calls, each a tool-name suffix and arguments.
Every request is answered from the conversation it carries, so the stand-in holds no session:
with n tool results already in the conversation it calls the (n+1)-th tool of the script (the
one of the MCP server's tools — its name contains the server's name — that ends with the
suffix), and once all have answered it ends the turn with a short text. Each tool result the CLI sends back — what a real
model would read — is recorded, in script order, as `Result(text, is_error)`.

Requests that are not the agentic turn (a CLI's side calls: titles, summaries, "who speaks
next" checks) get a harmless answer and are not part of the script.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FINAL_TEXT = "Done: the stand-in model has seen every tool result."


@dataclass
class Call:
    """One scripted tool call: the tool is the offered one whose name ends with `suffix`."""

    suffix: str
    arguments: dict


@dataclass
class Result:
    """A tool result as the CLI handed it to the model."""

    text: str
    is_error: bool | None = None


@dataclass
class Exchange:
    path: str
    body: dict
    status: int = 200


@dataclass
class StandIn:
    """The server; `url` is its base (`http://127.0.0.1:<port>`)."""

    script: list[Call]
    # The MCP server's name in the CLI's configuration, part of every tool name it offers.
    mcp_server: str = "mymcp"
    requests: list[Exchange] = field(default_factory=list)
    results: dict[int, Result] = field(default_factory=dict)
    # The tool names the agentic requests offered (as the CLI named them).
    offered: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StandIn":
        standin = self

        class Handler(_Handler):
            owner = standin

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def record(self, index: int, result: Result) -> None:
        with self.lock:
            self.results.setdefault(index, result)

    def finished(self) -> bool:
        with self.lock:
            return len(self.results) >= len(self.script)

    def wait_finished(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.finished():
                return True
            time.sleep(0.05)
        return self.finished()

    # The decision every API shares.
    def next_step(self, offered: list[str], answered: int) -> tuple[str, dict] | None:
        """The tool to call next (its offered name, arguments), or None to end the turn.

        Only the MCP server's tool qualifies (its name, as the CLI spells it, contains the
        server's name): a CLI's built-in tool of the same name (Gemini CLI's read_file) must
        never stand in for it."""
        if answered >= len(self.script):
            return None
        call = self.script[answered]
        matches = [n for n in offered if self.mcp_server in n and n.endswith(call.suffix)]
        if not matches:
            return None
        return min(matches, key=len), call.arguments


def sample_of(schema: dict):
    """A small value that matches a JSON schema (or a Gemini `Schema`, whose types are upper
    case). `next_speaker`-style enums get their "user" member: the stand-in never wants to go
    on by itself."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return "user" if "user" in schema["enum"] else schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return sample_of(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind or "object").lower()
    if kind == "object":
        return {k: sample_of(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "stand-in"


def text_of(content) -> str:
    """Text of a tool result in any of the APIs' shapes: a string, or a list of blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    parts.append(block["text"])
                else:
                    parts.append(json.dumps(block, ensure_ascii=False))
            else:
                parts.append(str(block))
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


class _Handler(BaseHTTPRequestHandler):
    owner: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- plumbing ------------------------------------------------------------------------
    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            raw = gzip.decompress(raw)
        elif self.headers.get("Content-Encoding") == "zstd":
            raise ValueError("zstd request bodies are not supported")
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return {}

    def _json(self, obj, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[tuple[str | None, dict]]) -> None:
        chunks = []
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            chunks.append(f"{head}data: {json.dumps(data)}\n\n")
        if events and events[-1][0] is None and self.path.endswith("chat/completions"):
            chunks.append("data: [DONE]\n\n")
        data = "".join(chunks).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        with self.owner.lock:
            self.owner.requests.append(Exchange(path, {}))
        if path.endswith("/models"):
            return self._json({"object": "list", "data": [], "models": []})
        self._json({}, 200)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._body()
        with self.owner.lock:
            self.owner.requests.append(Exchange(path, body))
        if path.endswith("/messages/count_tokens"):
            return self._json({"input_tokens": 100})
        if path.endswith("/messages"):
            return self.anthropic(body)
        if ":countTokens" in path:
            return self._json({"totalTokens": 100})
        if ":generateContent" in path or ":streamGenerateContent" in path:
            return self.gemini(body, stream=":streamGenerateContent" in path)
        if path.endswith("/responses"):
            return self.openai_responses(body)
        if path.endswith("/chat/completions"):
            return self.chat(body)
        self._json({"error": {"message": f"stand-in: no such endpoint {path}"}}, 404)

    def _offer(self, names: list[str]) -> None:
        with self.owner.lock:
            for n in names:
                if n not in self.owner.offered:
                    self.owner.offered.append(n)

    # -- Anthropic Messages ----------------------------------------------------------------
    def anthropic(self, body: dict) -> None:
        offered = [t.get("name", "") for t in body.get("tools") or [] if isinstance(t, dict)]
        ours = {}  # tool_use id → script index, from the assistant turns
        answered = 0
        for message in body.get("messages") or []:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use" and block.get("id", "").startswith("toolu_standin_"):
                    ours[block["id"]] = int(block["id"].rsplit("_", 1)[1])
                if block.get("type") == "tool_result" and block.get("tool_use_id") in ours:
                    index = ours[block["tool_use_id"]]
                    self.owner.record(index, Result(text_of(block.get("content")), block.get("is_error")))
                    answered = max(answered, index + 1)
        step = self.owner.next_step(offered, answered) if offered else None
        if offered and step:
            self._offer(offered)
        model = body.get("model", "claude-standin")
        msg_id = f"msg_standin_{uuid.uuid4().hex[:12]}"
        usage = {"input_tokens": 100, "output_tokens": 10, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        if step:
            name, args = step
            block = {"type": "tool_use", "id": f"toolu_standin_{uuid.uuid4().hex[:8]}_{answered}",
                     "name": name, "input": args}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": FINAL_TEXT if offered else "Stand-in answer."}
            stop = "end_turn"
        if not body.get("stream"):
            return self._json({"id": msg_id, "type": "message", "role": "assistant", "model": model,
                               "content": [block], "stop_reason": stop, "stop_sequence": None,
                               "usage": usage})
        start = dict(block, input={}) if block["type"] == "tool_use" else dict(block, text="")
        delta = ({"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                 if block["type"] == "tool_use" else {"type": "text_delta", "text": block["text"]})
        self._sse([
            ("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": usage}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                               "usage": {"output_tokens": 10}}),
            ("message_stop", {"type": "message_stop"}),
        ])

    # -- Gemini ----------------------------------------------------------------------------
    def gemini(self, body: dict, stream: bool) -> None:
        offered = []
        for tool in body.get("tools") or []:
            for decl in tool.get("functionDeclarations") or []:
                offered.append(decl.get("name", ""))
        calls = {}  # function name → pending script indexes, in order
        answered = 0
        for content in body.get("contents") or []:
            for part in content.get("parts") or []:
                call = part.get("functionCall")
                if call and str(call.get("id", "")).startswith("standin_"):
                    calls.setdefault(call["name"], []).append(int(call["id"].rsplit("_", 1)[1]))
                response = part.get("functionResponse")
                if response and calls.get(response.get("name")):
                    index = calls[response["name"]].pop(0)
                    self.owner.record(index, Result(json.dumps(response.get("response"), ensure_ascii=False)))
                    answered = max(answered, index + 1)
        config = body.get("generationConfig") or {}
        step = self.owner.next_step(offered, answered) if offered else None
        if step:
            self._offer(offered)
            name, args = step
            part = {"functionCall": {"name": name, "args": args,
                                     "id": f"standin_{uuid.uuid4().hex[:8]}_{answered}"}}
        elif config.get("responseMimeType") == "application/json":
            # A side call that wants JSON (a router's classification, "who speaks next"): a
            # value of its schema.
            schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
            part = {"text": json.dumps(sample_of(schema))}
        else:
            part = {"text": FINAL_TEXT if offered else "Stand-in answer."}
        chunk = {
            "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 10, "totalTokenCount": 110},
            "modelVersion": "gemini-standin",
        }
        if stream:
            return self._sse([(None, chunk)])
        self._json(chunk)

    # -- OpenAI Responses --------------------------------------------------------------------
    def openai_responses(self, body: dict) -> None:
        offered = []
        for tool in body.get("tools") or []:
            if tool.get("type") == "function":
                offered.append(tool.get("name", ""))
            elif tool.get("type") == "namespace":  # tools grouped under an MCP server
                for inner in tool.get("tools") or []:
                    offered.append(f"{tool.get('name', '')}{inner.get('name', '')}")
        ours = {}
        answered = 0
        for item in body.get("input") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call" and str(item.get("call_id", "")).startswith("call_standin_"):
                ours[item["call_id"]] = int(item["call_id"].rsplit("_", 1)[1])
            if item.get("type") == "function_call_output" and item.get("call_id") in ours:
                index = ours[item["call_id"]]
                self.owner.record(index, Result(text_of(item.get("output"))))
                answered = max(answered, index + 1)
        step = self.owner.next_step(offered, answered) if offered else None
        resp_id = f"resp_standin_{uuid.uuid4().hex[:12]}"
        usage = {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 10,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 110}
        if step:
            self._offer(offered)
            name, args = step
            namespace = None
            for tool in body.get("tools") or []:
                if tool.get("type") == "namespace" and name.startswith(tool.get("name", "")):
                    namespace, name = tool["name"], name[len(tool["name"]):]
            item = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}", "status": "completed",
                    "call_id": f"call_standin_{uuid.uuid4().hex[:8]}_{answered}", "name": name,
                    "arguments": json.dumps(args)}
            if namespace:
                item["namespace"] = namespace
        else:
            item = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:12]}", "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": FINAL_TEXT if offered else "Stand-in answer.",
                                 "annotations": []}]}
        response = {"id": resp_id, "object": "response", "created_at": int(time.time()), "status": "completed",
                    "model": body.get("model", "gpt-standin"), "output": [item], "usage": usage}
        if not body.get("stream"):
            return self._json(response)
        created = dict(response, status="in_progress", output=[], usage=None)
        self._sse([
            ("response.created", {"type": "response.created", "sequence_number": 0, "response": created}),
            ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": 1,
                                            "output_index": 0, "item": item}),
            ("response.output_item.done", {"type": "response.output_item.done", "sequence_number": 2,
                                           "output_index": 0, "item": item}),
            ("response.completed", {"type": "response.completed", "sequence_number": 3, "response": response}),
        ])

    # -- OpenAI Chat Completions ------------------------------------------------------------
    def chat(self, body: dict) -> None:
        offered = [t.get("function", {}).get("name", "") for t in body.get("tools") or []]
        ours = {}
        answered = 0
        for message in body.get("messages") or []:
            for call in message.get("tool_calls") or []:
                if str(call.get("id", "")).startswith("call_standin_"):
                    ours[call["id"]] = int(call["id"].rsplit("_", 1)[1])
            if message.get("role") == "tool" and message.get("tool_call_id") in ours:
                index = ours[message["tool_call_id"]]
                self.owner.record(index, Result(text_of(message.get("content"))))
                answered = max(answered, index + 1)
        step = self.owner.next_step(offered, answered) if offered else None
        if step:
            self._offer(offered)
            name, args = step
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": f"call_standin_{uuid.uuid4().hex[:8]}_{answered}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}]}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": FINAL_TEXT if offered else "Stand-in answer."}
            finish = "stop"
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()),
                "model": body.get("model", "gpt-standin")}
        usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
        if not body.get("stream"):
            return self._json(dict(base, object="chat.completion", usage=usage,
                                   choices=[{"index": 0, "message": message, "finish_reason": finish}]))
        self._sse([
            (None, dict(base, object="chat.completion.chunk",
                        choices=[{"index": 0, "delta": message, "finish_reason": None}])),
            (None, dict(base, object="chat.completion.chunk", usage=usage,
                        choices=[{"index": 0, "delta": {}, "finish_reason": finish}])),
        ])


__all__ = ["Call", "Result", "StandIn", "FINAL_TEXT", "sample_of", "text_of"]
