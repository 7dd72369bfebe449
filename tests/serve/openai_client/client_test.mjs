// epwa serve driven by the official `openai` npm client: models, completions and chat completions
// (plain and streamed, the chat template given with --chat-template), the watermark record, error
// objects, detection; GPT-OSS's harmony replies. Usage:
// node client_test.mjs EPWA_BINARY CHAT_TEMPLATE HARMONY_TEMPLATE
// (starts the servers on free ports with a keyring of their own, stops them at the end; exits non-zero
// on the first failure).
import { spawn } from "node:child_process";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";

const [epwa, chatTemplate, harmonyTemplate] = process.argv.slice(2);
const keyring = join(mkdtempSync(join(tmpdir(), "epwa-npm-")), "keys.json");
writeFileSync(keyring, JSON.stringify({ default: "k1", keys: { k1: "npm-test-secret" } }),
              { mode: 0o600 });
const servers = [];
// A server with `template` on a free port; resolves to its address.
async function start(template) {
  const server = spawn(epwa, ["serve", "--port", "0", "-q", "--policy", "opt-in",
                              "--keyring", keyring, "--chat-template", template],
                       { stdio: ["ignore", "ignore", "pipe"] });
  servers.push(server);
  return new Promise((resolve, reject) => {
    let err = "";
    const timer = setTimeout(() => reject(new Error("no server address in 60 s: " + err)), 60000);
    server.stderr.on("data", (d) => {
      err += d;
      const m = err.match(/(http:\/\/127\.0\.0\.1:\d+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    server.on("exit", (code) => reject(new Error(`server exited (${code}): ${err}`)));
  });
}
const base = await start(chatTemplate);

try {
  const client = new OpenAI({ baseURL: base + "/v1", apiKey: "unused", maxRetries: 0 });

  const models = await client.models.list();
  assert.equal(models.data[0].id, "epwa");

  const plain = await client.completions.create({
    model: "epwa", prompt: "The river", max_tokens: 20, temperature: 0 });
  assert.equal(plain.object, "text_completion");
  assert.ok(plain.choices[0].text.length > 0);
  assert.equal(plain.usage.completion_tokens, 20);
  assert.equal(plain.watermark.applied, false);

  // Streamed: the same text in pieces.
  const stream = await client.completions.create({
    model: "epwa", prompt: "The river", max_tokens: 20, temperature: 0, stream: true });
  let joined = "", pieces = 0, finish = null;
  for await (const chunk of stream) {
    joined += chunk.choices[0].text;
    pieces += 1;
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  assert.equal(joined, plain.choices[0].text);
  assert.ok(pieces > 5);
  assert.equal(finish, "length");

  // Streamed with echo: the prompt comes first, and the pieces add up to the unstreamed answer.
  const echoed = await client.completions.create({
    model: "epwa", prompt: "The river", max_tokens: 8, temperature: 0, echo: true, logprobs: 1 });
  const echoStream = await client.completions.create({
    model: "epwa", prompt: "The river", max_tokens: 8, temperature: 0, echo: true, logprobs: 1,
    stream: true });
  let echoJoined = "", echoTokens = [];
  for await (const chunk of echoStream) {
    echoJoined += chunk.choices[0].text;
    echoTokens.push(...chunk.choices[0].logprobs.tokens);
  }
  assert.ok(echoJoined.includes("river"));
  assert.equal(echoJoined, echoed.choices[0].text);
  assert.deepEqual(echoTokens, echoed.choices[0].logprobs.tokens);

  // Opt-in watermark through an extra body field; then detected with the key.
  const marked = await client.completions.create({
    model: "epwa", prompt: "The river", max_tokens: 200, temperature: 0.7, seed: 3,
    watermark: true });
  assert.equal(marked.watermark.applied, true);
  assert.equal(marked.watermark.key_id, "k1");
  const det = await (await fetch(base + "/v1/watermark/detect", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "The river", text: marked.choices[0].text }) })).json();
  assert.equal(det.detected, true, JSON.stringify(det));

  // Errors arrive as the client's APIError with OpenAI's fields.
  await assert.rejects(
    client.completions.create({ model: "epwa", prompt: "x", max_tokens: -1 }),
    (e) => e instanceof OpenAI.APIError && e.status === 400 && /max_tokens/.test(e.message) &&
           e.param === "max_tokens");
  await assert.rejects(
    client.completions.create({ model: "epwa", prompt: [1, 1e9] }),
    (e) => e instanceof OpenAI.APIError && e.status === 400 && /out of range/.test(e.message));

  // Chat: the whole answer, then streamed deltas adding up to it; the template's refusal is a 400.
  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "The river" }];
  const chat = await client.chat.completions.create({
    model: "epwa", messages, max_tokens: 20, temperature: 0, watermark: true });
  assert.equal(chat.object, "chat.completion");
  assert.equal(chat.choices[0].message.role, "assistant");
  assert.ok(chat.choices[0].message.content.length > 0);
  assert.equal(chat.watermark.applied, true);
  const chatStream = await client.chat.completions.create({
    model: "epwa", messages, max_tokens: 20, temperature: 0, watermark: true, stream: true });
  let said = "", role = null;
  for await (const chunk of chatStream) {
    said += chunk.choices[0]?.delta?.content ?? "";
    role = chunk.choices[0]?.delta?.role ?? role;
  }
  assert.equal(role, "assistant");
  assert.equal(said, chat.choices[0].message.content);
  // Structured output as the client sends it: the reply parses and follows the schema.
  const structured = await client.chat.completions.create({
    model: "epwa", messages, max_tokens: 200, temperature: 0.8, seed: 3, watermark: true,
    response_format: { type: "json_schema", json_schema: { name: "verdict", strict: true, schema: {
      type: "object", additionalProperties: false, required: ["ok", "n"],
      properties: { ok: { type: "boolean" }, n: { type: "integer" } } } } } });
  const verdict = JSON.parse(structured.choices[0].message.content);
  assert.equal(typeof verdict.ok, "boolean");
  assert.ok(Number.isInteger(verdict.n));
  assert.deepEqual(Object.keys(verdict).sort(), ["n", "ok"]);
  await assert.rejects(
    client.chat.completions.create({
      model: "epwa", messages, response_format: { type: "json_schema", json_schema: { name: "x",
        schema: { allOf: [] } } } }),
    (e) => e instanceof OpenAI.APIError && e.status === 400 && /allOf/.test(e.message));
  await assert.rejects(
    client.chat.completions.create({
      model: "epwa", messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }] }),
    (e) => e instanceof OpenAI.APIError && e.status === 400 && /roles must alternate/.test(e.message));

  // GPT-OSS's harmony template: a JSON reply is the final channel's message, streamed as it is
  // written; a forced call arrives as the client's tool_calls (docs/SERVER.md, "GPT-OSS").
  const harmony = new OpenAI({ baseURL: (await start(harmonyTemplate)) + "/v1", apiKey: "unused",
                               maxRetries: 0 });
  const weather = { type: "object", required: ["city"],
                    properties: { city: { type: "string", enum: ["Paris", "Rome"] } } };
  const asked = { model: "epwa", messages: [{ role: "user", content: "Weather in Paris?" }],
                  max_tokens: 60, temperature: 0.8, seed: 5 };
  const json = await harmony.chat.completions.create({ ...asked,
    response_format: { type: "json_schema", json_schema: { name: "w", schema: weather } } });
  assert.ok(["Paris", "Rome"].includes(JSON.parse(json.choices[0].message.content).city));
  assert.equal(json.choices[0].message.reasoning_content, undefined);
  let streamed = "", deltas = 0;
  for await (const chunk of await harmony.chat.completions.create({ ...asked, stream: true,
    response_format: { type: "json_schema", json_schema: { name: "w", schema: weather } } })) {
    const piece = chunk.choices[0]?.delta?.content ?? "";
    streamed += piece;
    deltas += piece.length > 0 ? 1 : 0;
  }
  assert.equal(streamed, json.choices[0].message.content);
  assert.ok(deltas > 1);
  const called = await harmony.chat.completions.create({ ...asked,
    tools: [{ type: "function", function: { name: "get_weather", description: "Current weather",
                                             parameters: weather } }],
    tool_choice: { type: "function", function: { name: "get_weather" } } });
  assert.equal(called.choices[0].finish_reason, "tool_calls");
  const call = called.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  assert.ok(["Paris", "Rome"].includes(JSON.parse(call.function.arguments).city));
  console.log("openai client: all checks passed against " + base);
} finally {
  for (const s of servers) s.kill("SIGTERM");
}
