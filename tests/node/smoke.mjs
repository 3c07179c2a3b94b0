// Upload, batch, poll, download with the official openai Node SDK against a Zumik server.
// Usage: ZUMIK_URL=http://127.0.0.1:8080/v1 ZUMIK_KEY=... node smoke.mjs
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ baseURL: process.env.ZUMIK_URL, apiKey: process.env.ZUMIK_KEY, maxRetries: 0 });
const lines = [0, 1, 2].map((i) => JSON.stringify({
  custom_id: `n${i}`, method: "POST", url: "/v1/chat/completions",
  body: { model: "zumik-echo", messages: [{ role: "user", content: `node ${i}` }] },
})).join("\n") + "\n";

const file = await client.files.create({ file: await toFile(Buffer.from(lines), "node.jsonl"), purpose: "batch" });
let batch = await client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" });
const deadline = Date.now() + 60_000;
while (!["completed", "failed", "cancelled", "expired"].includes(batch.status)) {
  if (Date.now() > deadline) throw new Error(`batch stuck in ${batch.status}`);
  await new Promise((r) => setTimeout(r, 200));
  batch = await client.batches.retrieve(batch.id);
}
const text = await (await client.files.content(batch.output_file_id)).text();
const results = text.trim().split("\n").map((l) => JSON.parse(l));
const answers = Object.fromEntries(results.map((r) => [r.custom_id, r.response.body.choices[0].message.content]));
if (batch.status !== "completed" || answers.n2 !== "node 2" || results.length !== 3) {
  throw new Error(`unexpected result: ${batch.status} ${JSON.stringify(answers)}`);
}
let notFound = false;
try { await client.files.retrieve("file-000000000000000000000000"); } catch (e) { notFound = e.status === 404; }
if (!notFound) throw new Error("expected a 404 NotFoundError");
console.log(JSON.stringify({ ok: true, batch: batch.id, counts: batch.request_counts }));
