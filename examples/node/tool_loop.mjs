// The tool-calling loop with the openai npm package: the model calls get_weather,
// the program runs it, appends the assistant message and the tool result, and asks
// again. PORTWAY_BASE_URL, PORTWAY_PAT, PORTWAY_MODEL as in chat.mjs.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.PORTWAY_BASE_URL ?? "http://127.0.0.1:8000/v1",
  apiKey: process.env.PORTWAY_PAT,
});
const model = process.env.PORTWAY_MODEL ?? "google/gemma/models/gemma-3-270m";
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current temperature for a given location.",
      parameters: {
        type: "object",
        properties: {
          location: { type: "string", description: "City and country", maxLength: 80 },
        },
        required: ["location"],
        additionalProperties: false,
      },
      strict: true,
    },
  },
];

function getWeather(location) {
  return { location, temperature: "20°C", conditions: "Partly cloudy" };
}

const messages = [{ role: "user", content: "What is the weather like in New York today?" }];
const first = await client.chat.completions.create({
  model,
  messages,
  tools,
  tool_choice: process.env.PORTWAY_TOOL_CHOICE ?? "required",
  parallel_tool_calls: false,
  max_tokens: 400, // one call, its location at most 80 characters: room to spare
});
const message = first.choices[0].message;
messages.push(message);
for (const call of message.tool_calls ?? []) {
  const args = JSON.parse(call.function.arguments);
  messages.push({
    role: "tool",
    tool_call_id: call.id,
    name: call.function.name,
    content: JSON.stringify(getWeather(args.location)),
  });
}
const second = await client.chat.completions.create({ model, messages, max_tokens: 48 });
console.log(
  JSON.stringify({
    tool_calls: message.tool_calls,
    finish_reason: first.choices[0].finish_reason,
    answer: second.choices[0].message.content,
  }),
);
