// A chat completion and a streamed one through Portway with the openai npm package.
// PORTWAY_BASE_URL (e.g. http://127.0.0.1:8000/v1), PORTWAY_PAT and PORTWAY_MODEL
// (a model URL such as http://127.0.0.1:8000/google/gemma/models/gemma-3-270m).
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.PORTWAY_BASE_URL ?? "http://127.0.0.1:8000/v1",
  apiKey: process.env.PORTWAY_PAT,
});
const model = process.env.PORTWAY_MODEL ?? "google/gemma/models/gemma-3-270m";
const messages = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "Who are you?" },
];

const completion = await client.chat.completions.create({ model, messages, max_tokens: 24, seed: 7 });
console.log(JSON.stringify({ unary: completion.choices[0].message.content, usage: completion.usage }));

const stream = await client.chat.completions.create({
  model,
  messages,
  max_tokens: 24,
  seed: 7,
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length > 0) text += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
console.log(JSON.stringify({ streamed: text, usage }));
