// The Portway console: one ES module, no dependencies. Every number and word it
// shows comes from the public API, called with the signed-in token; model output
// is only ever set as text (textContent), never parsed as HTML.

const TOKEN_KEY = "portway.token";
const PUBLIC_URL = document.querySelector('meta[name="portway-public-url"]').content;
const main = document.getElementById("main");
let me = null;

// ------------------------------------------------------------------ DOM helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let fieldCount = 0;
function field(label, control, hint) {
  const id = control.id || `f${++fieldCount}`;
  control.id = id;
  const hintNode = hint ? h("small", { id: `${id}-hint`, text: hint }) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: id, text: label }), control, hintNode);
}

function alertBox() {
  return h("p", { class: "alert", role: "alert", hidden: true });
}

function showError(box, error) {
  box.textContent = error instanceof Error ? error.message : String(error);
  box.hidden = false;
}

function date(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") : "never";
}

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, body) {
    const message = body?.error?.message || `The server answered ${status}.`;
    super(message);
    this.status = status;
    this.body = body;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  });
  if (raw && response.ok) return response;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Server-sent events of a streaming call: yields each `data:` payload, parsed.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!data || data === "[DONE]") continue;
      const parsed = JSON.parse(data);
      if (parsed.error) throw new ApiError(200, parsed);
      yield parsed;
    }
  }
}

// ------------------------------------------------------------------ sign-in

function signIn(then) {
  const input = h("input", { type: "password", autocomplete: "off", required: true });
  const error = alertBox();
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title", text: "Sign in" }),
    h("p", {
      text:
        "Paste a personal access token. It stays in this browser tab's session " +
        "and is sent only to this server, in the Authorization header.",
    }),
    field("Access token", input, "Made by `portway pat create`, or shown once at first start."),
    error,
    h("button", { type: "submit", text: "Sign in" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await loadMe();
      then();
    } catch (exc) {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(error, exc.status === 401 ? "This server refused that token." : exc);
    }
  });
  main.replaceChildren(form);
  input.focus();
}

async function loadMe() {
  me = await api("/v1/me");
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = `${me.user} · ${me.scopes.join(", ")}`;
  const out = document.getElementById("sign-out");
  out.hidden = false;
  out.onclick = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.assign("/");
  };
  for (const node of document.querySelectorAll("[data-admin]")) node.hidden = !me.is_admin;
}

// ------------------------------------------------------------------ models

function modelPath(id) {
  return `/${id}`;
}

async function modelsView() {
  const list = await api("/v1/models");
  const search = h("input", { type: "search", placeholder: "gemma, embedding, alice/…" });
  const kinds = [...new Set(list.data.map((model) => model.kind))].sort();
  const kind = h("select", {}, h("option", { value: "", text: "Every kind" }));
  for (const name of kinds) kind.append(h("option", { value: name, text: name }));
  const results = h("ul", { class: "models", "aria-live": "polite" });
  const count = h("p", { class: "muted" });
  const render = () => {
    const words = search.value.trim().toLowerCase();
    const shown = list.data.filter(
      (model) => (!kind.value || model.kind === kind.value) && model.id.toLowerCase().includes(words),
    );
    count.textContent = `${shown.length} of ${list.data.length} models`;
    results.replaceChildren(
      ...shown.map((model) =>
        h(
          "li",
          { class: "card model" },
          h("a", { href: modelPath(model.id), text: model.id }),
          h("span", { class: `badge ${model.kind}`, text: model.kind }),
          h("span", { class: "muted", text: `owned by ${model.owned_by}` }),
        ),
      ),
    );
  };
  search.addEventListener("input", render);
  kind.addEventListener("change", render);
  main.replaceChildren(
    h("h1", { text: "Models" }),
    h("div", { class: "filters" }, field("Search by name", search), field("Kind", kind)),
    count,
    results,
  );
  render();
}

function snippets(model, url) {
  const server = PUBLIC_URL;
  const call = {
    chat: {
      py: `response = client.chat.completions.create(\n    model="${url}",\n    messages=[{"role": "user", "content": "Hello!"}],\n)\nprint(response.choices[0].message.content)`,
      js: `const response = await client.chat.completions.create({\n  model: "${url}",\n  messages: [{ role: "user", content: "Hello!" }],\n});\nconsole.log(response.choices[0].message.content);`,
      path: "chat/completions",
      body: `{"model": "${url}", "messages": [{"role": "user", "content": "Hello!"}]}`,
    },
    embedding: {
      py: `response = client.embeddings.create(model="${url}", input=["Hello!"])\nprint(len(response.data[0].embedding))`,
      js: `const response = await client.embeddings.create({ model: "${url}", input: ["Hello!"] });\nconsole.log(response.data[0].embedding.length);`,
      path: "embeddings",
      body: `{"model": "${url}", "input": ["Hello!"]}`,
    },
    image: {
      py: `response = client.images.generate(model="${url}", prompt="a lighthouse at dusk")\nprint(response.data[0].url)`,
      js: `const response = await client.images.generate({ model: "${url}", prompt: "a lighthouse at dusk" });\nconsole.log(response.data[0].url);`,
      path: "images/generations",
      body: `{"model": "${url}", "prompt": "a lighthouse at dusk"}`,
    },
  }[model.kind] || { py: "", js: "", path: "models", body: "{}" };
  return {
    Python:
      `import os\n\nfrom openai import OpenAI\n\n` +
      `client = OpenAI(base_url="${server}/v1", api_key=os.environ["PORTWAY_TOKEN"])\n${call.py}\n`,
    Node:
      `import OpenAI from "openai";\n\n` +
      `const client = new OpenAI({ baseURL: "${server}/v1", apiKey: process.env.PORTWAY_TOKEN });\n${call.js}\n`,
    cURL:
      `curl ${server}/v1/${call.path} \\\n  -H "Authorization: Bearer $PORTWAY_TOKEN" \\\n` +
      `  -H "Content-Type: application/json" \\\n  -d '${call.body}'\n`,
  };
}

function snippetBox(model, url) {
  const codes = snippets(model, url);
  const code = h("code");
  const pre = h("pre", { class: "snippet", tabindex: 0, role: "tabpanel", id: "snippet-panel" }, code);
  const copy = h("button", { type: "button", class: "small", text: "Copy" });
  const tabs = h("div", { role: "tablist", "aria-label": "Snippet language" });
  const select = (name) => {
    code.textContent = codes[name];
    for (const tab of tabs.children) tab.setAttribute("aria-selected", String(tab.dataset.lang === name));
  };
  for (const name of Object.keys(codes)) {
    tabs.append(
      h("button", {
        type: "button",
        role: "tab",
        "data-lang": name,
        "aria-controls": "snippet-panel",
        text: name,
        onclick: () => select(name),
      }),
    );
  }
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      copy.textContent = "Copied";
    } catch {
      getSelection().selectAllChildren(code);
      copy.textContent = "Selected: press Ctrl+C";
    }
  });
  select("Python");
  return h("section", { class: "card", "aria-labelledby": "use-title" },
    h("div", { class: "row" }, h("h2", { id: "use-title", text: "Use it from code" }), copy),
    h("p", { class: "muted", text: "Set PORTWAY_TOKEN to a token of yours (see Tokens)." }),
    tabs, pre);
}

function yesNo(value) {
  return value ? "yes" : "no";
}

function facts(model) {
  const info = model.portway;
  const rows = [
    ["Kind", model.kind],
    ["Backend", info.backend],
    ["Owner", model.owned_by],
    ["Visibility", info.visibility],
    ["Serving version", model.version || "(none attached)"],
  ];
  if (info.aliases.length) rows.push(["Aliases", info.aliases.join(", ")]);
  if (info.capabilities) {
    rows.push(["Context length", info.context_length ? `${info.context_length} tokens` : "unknown"]);
    rows.push(["Tools", yesNo(info.capabilities.tools)]);
    rows.push(["Structured outputs", yesNo(info.capabilities.json_schema)]);
    rows.push(["Reasoning", yesNo(info.capabilities.reasoning)]);
    rows.push(["Images in", yesNo(info.capabilities.vision)]);
  }
  if (info.dimensions !== undefined) {
    rows.push(["Dimensions", info.dimensions], ["Max input tokens", info.max_input_tokens]);
  }
  if (info.default_size) rows.push(["Default size", info.default_size]);
  const dl = h("dl", { class: "facts" });
  for (const [name, value] of rows) dl.append(h("dt", { text: name }), h("dd", { text: value }));
  const versions = h("ul", { class: "versions" });
  for (const version of info.versions) {
    const runners = info.backend === "runner" ? ` · ${version.runners.length} runner(s) attached` : "";
    const link = `/${model.id}/versions/${encodeURIComponent(version.id)}`;
    versions.append(h("li", {}, h("a", { href: link, text: version.id || "(none)" }), runners));
  }
  return h("section", { class: "card", "aria-labelledby": "facts-title" },
    h("h2", { id: "facts-title", text: "About" }), dl,
    h("h3", { text: "Versions" }), versions);
}

async function modelView() {
  const reference = decodeURIComponent(location.pathname.slice(1));
  const model = await api(`/v1/models/${reference}`);
  const url = `${PUBLIC_URL}/${reference}`;
  const playground = { chat: chatPlayground, embedding: embeddingPlayground, image: imagePlayground }[model.kind];
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/", text: "Models" }), " / ", reference),
    h("h1", { text: model.id }),
    h("p", { class: "muted url", text: url }),
    h("div", { class: "columns" },
      h("div", {}, facts(model), snippetBox(model, url)),
      playground ? playground(reference, model) : h("p", { text: "No playground for this kind." })),
  );
}

// ------------------------------------------------------------------ playgrounds

const EXAMPLE_TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather now in a city",
      parameters: {
        type: "object",
        properties: { location: { type: "string", description: "City and country" } },
        required: ["location"],
      },
    },
  },
];

function messageNode(role, text) {
  const body = h("div", { class: "content", text });
  return h("div", { class: `message ${role}`, "data-role": role }, h("span", { class: "role", text: role }), body);
}

function chatControls(model) {
  const caps = model.portway.capabilities || {};
  const controls = {
    api: h("select", {}, h("option", { value: "chat", text: "Chat Completions" }),
      h("option", { value: "responses", text: "Responses" })),
    system: h("textarea", { rows: 2, placeholder: "You are a helpful assistant." }),
    temperature: h("input", { type: "number", min: 0, max: 2, step: 0.1, value: 0.7 }),
    maxTokens: h("input", { type: "number", min: 1, step: 1, value: 256 }),
    stop: h("input", { type: "text", placeholder: "comma-separated" }),
    tools: h("textarea", { rows: 6, spellcheck: "false", placeholder: "[] (a JSON list of tools)" }),
    toolChoice: h("select", {}, h("option", { value: "auto", text: "auto" }),
      h("option", { value: "none", text: "none" }), h("option", { value: "required", text: "required" })),
    schemaOn: h("input", { type: "checkbox" }),
    schema: h("textarea", { rows: 5, spellcheck: "false",
      placeholder: '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}' }),
  };
  const refreshChoices = () => {
    const keep = controls.toolChoice.value;
    for (const option of [...controls.toolChoice.options].slice(3)) option.remove();
    for (const tool of parseJson(controls.tools.value, [], "Tools") || []) {
      const name = tool?.function?.name;
      if (name) controls.toolChoice.append(h("option", { value: `fn:${name}`, text: `call ${name}` }));
    }
    controls.toolChoice.value = [...controls.toolChoice.options].some((o) => o.value === keep) ? keep : "auto";
  };
  controls.tools.addEventListener("change", refreshChoices);
  const example = h("button", { type: "button", class: "small", text: "Insert example tool",
    onclick: () => { controls.tools.value = JSON.stringify(EXAMPLE_TOOLS, null, 2); refreshChoices(); } });
  const fieldset = h("fieldset", { class: "settings" }, h("legend", { text: "Settings" }),
    field("API", controls.api),
    field("System prompt", controls.system),
    h("div", { class: "row" }, field("Temperature", controls.temperature), field("Max tokens", controls.maxTokens)),
    field("Stop sequences", controls.stop),
    caps.tools === false ? null : h("div", {}, field("Tools (JSON)", controls.tools), example,
      field("Tool choice", controls.toolChoice)),
    caps.json_schema === false ? null : h("div", {},
      h("div", { class: "check" }, controls.schemaOn, h("label", { for: (controls.schemaOn.id = "schema-on"), text: "Answer in JSON matching a schema" })),
      field("JSON schema", controls.schema)),
  );
  return { controls, fieldset };
}

function parseJson(text, empty, what) {
  if (!text.trim()) return empty;
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what} is not valid JSON.`);
  }
}

function chatRequest(reference, c, messages) {
  const body = { model: reference, messages, stream: true, stream_options: { include_usage: true } };
  body.temperature = Number(c.temperature.value);
  body.max_tokens = Number(c.maxTokens.value);
  const stop = c.stop.value.split(",").map((x) => x.trim()).filter(Boolean);
  if (stop.length) body.stop = stop;
  const tools = parseJson(c.tools.value, [], "Tools");
  if (tools.length) {
    body.tools = tools;
    const choice = c.toolChoice.value;
    body.tool_choice = choice.startsWith("fn:")
      ? { type: "function", function: { name: choice.slice(3) } } : choice;
  }
  if (c.schemaOn.checked) {
    const schema = parseJson(c.schema.value, { type: "object" }, "The JSON schema");
    body.response_format = { type: "json_schema", json_schema: { name: "answer", schema, strict: true } };
  }
  return body;
}

function chatPlayground(reference, model) {
  const { controls: c, fieldset } = chatControls(model);
  const transcript = h("div", { class: "transcript", "aria-live": "polite", "aria-label": "Conversation", role: "log" });
  const input = h("textarea", { rows: 3, placeholder: "Say something… (Ctrl+Enter sends)" });
  const send = h("button", { type: "submit", text: "Send" });
  const stop = h("button", { type: "button", class: "secondary", text: "Stop", disabled: true });
  const clear = h("button", { type: "button", class: "secondary", text: "Clear" });
  const error = alertBox();
  const toolForm = h("div", { class: "tool-results" });
  const usage = h("p", { class: "muted usage-line" });
  const messages = [];
  let previousResponse = null;
  let controller = null;

  const busy = (on) => { send.disabled = on; stop.disabled = !on; };
  const run = async (newMessages) => {
    error.hidden = true;
    toolForm.replaceChildren();
    messages.push(...newMessages);
    const reply = messageNode("assistant", "");
    transcript.append(reply);
    controller = new AbortController();
    busy(true);
    try {
      if (c.api.value === "responses") await runResponses(reply, newMessages);
      else await runChat(reply);
    } catch (exc) {
      if (exc.name !== "AbortError") showError(error, exc);
    } finally {
      busy(false);
      (toolForm.querySelector("textarea") || input).focus();
    }
  };

  const runChat = async (reply) => {
    const system = c.system.value.trim();
    const sent = system ? [{ role: "system", content: system }, ...messages] : [...messages];
    const response = await streamPost("/v1/chat/completions", chatRequest(reference, c, sent), controller);
    const content = reply.querySelector(".content");
    const calls = [];
    for await (const chunk of events(response)) {
      if (chunk.usage) usage.textContent = `${chunk.usage.prompt_tokens} prompt + ${chunk.usage.completion_tokens} completion tokens`;
      const delta = chunk.choices?.[0]?.delta;
      if (!delta) continue;
      if (delta.content) content.textContent += delta.content;
      for (const call of delta.tool_calls || []) {
        const slot = (calls[call.index] ||= { id: "", type: "function", function: { name: "", arguments: "" } });
        if (call.id) slot.id = call.id;
        if (call.function?.name) slot.function.name += call.function.name;
        if (call.function?.arguments) slot.function.arguments += call.function.arguments;
      }
    }
    const message = { role: "assistant", content: content.textContent || null };
    if (calls.length) {
      message.tool_calls = calls;
      for (const call of calls) {
        reply.append(h("div", { class: "tool-call", "data-tool-call": call.function.name },
          h("span", { class: "role", text: `tool call · ${call.function.name}` }),
          h("code", { text: call.function.arguments })));
      }
      askToolResults(calls);
    }
    messages.push(message);
  };

  const runResponses = async (reply, newMessages) => {
    const last = newMessages[newMessages.length - 1];
    const body = {
      model: reference, input: last.content, stream: true,
      temperature: Number(c.temperature.value), max_output_tokens: Number(c.maxTokens.value),
    };
    if (c.system.value.trim()) body.instructions = c.system.value.trim();
    if (previousResponse) body.previous_response_id = previousResponse;
    const response = await streamPost("/v1/responses", body, controller);
    const content = reply.querySelector(".content");
    for await (const event of events(response)) {
      if (event.type === "response.output_text.delta") content.textContent += event.delta;
      if (event.type === "response.completed") {
        previousResponse = event.response.id;
        const used = event.response.usage;
        if (used) usage.textContent = `${used.input_tokens} input + ${used.output_tokens} output tokens`;
      }
      if (event.type === "response.failed") throw new Error(event.response?.error?.message || "The response failed.");
    }
    messages.push({ role: "assistant", content: content.textContent });
  };

  const askToolResults = (calls) => {
    const fields = calls.map((call) => {
      const box = h("textarea", { rows: 2, placeholder: '{"temperature": 21}' });
      box.dataset.callId = call.id;
      return field(`Result of ${call.function.name} (${call.id})`, box);
    });
    const submit = h("button", { type: "submit", text: "Send tool results" });
    const form = h("form", { "aria-label": "Tool results" }, ...fields, submit);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const results = [...form.querySelectorAll("textarea")].map((box) => {
        transcript.append(messageNode("tool", box.value));
        return { role: "tool", tool_call_id: box.dataset.callId, content: box.value };
      });
      run(results);
    });
    toolForm.replaceChildren(form);
    form.querySelector("textarea").focus();
  };

  const form = h("form", { class: "composer", "aria-label": "Compose" },
    field("Message", input), h("div", { class: "row" }, send, stop, clear));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    transcript.append(messageNode("user", text));
    run([{ role: "user", content: text }]);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  stop.addEventListener("click", () => controller?.abort());
  clear.addEventListener("click", () => {
    messages.length = 0;
    previousResponse = null;
    transcript.replaceChildren();
    toolForm.replaceChildren();
  });
  return h("section", { class: "card playground", "aria-labelledby": "play-title" },
    h("h2", { id: "play-title", text: "Playground" }), fieldset, transcript, toolForm, error, form, usage);
}

async function streamPost(path, body, controller) {
  const response = await fetch(path, {
    method: "POST",
    headers: { Authorization: `Bearer ${token()}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: controller.signal,
    credentials: "omit",
  });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  return response;
}

function imagePlayground(reference, model) {
  const prompt = h("textarea", { rows: 2, placeholder: "a lighthouse at dusk" });
  const size = h("input", { type: "text", value: model.portway.default_size || "512x512" });
  const go = h("button", { type: "submit", text: "Generate" });
  const error = alertBox();
  const gallery = h("div", { class: "gallery", "aria-live": "polite" });
  const form = h("form", { "aria-label": "Image prompt" }, field("Prompt", prompt),
    field("Size", size, "WIDTHxHEIGHT"), go, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    go.disabled = true;
    try {
      const body = { model: reference, prompt: prompt.value, size: size.value, n: 1, response_format: "b64_json" };
      const result = await api("/v1/images/generations", { method: "POST", body });
      gallery.replaceChildren(...result.data.map((image) =>
        h("img", { src: `data:image/png;base64,${image.b64_json}`, alt: image.revised_prompt || prompt.value })));
    } catch (exc) {
      showError(error, exc);
    } finally {
      go.disabled = false;
    }
  });
  return h("section", { class: "card playground", "aria-labelledby": "play-title" },
    h("h2", { id: "play-title", text: "Playground" }), form, gallery);
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
}

function embeddingPlayground(reference) {
  const texts = h("textarea", { rows: 4 });
  texts.value = "A cat sat on the mat.\nA kitten rested on the rug.\nStock markets fell today.";
  const go = h("button", { type: "submit", text: "Compare" });
  const error = alertBox();
  const result = h("div", { class: "similarity", "aria-live": "polite" });
  const form = h("form", { "aria-label": "Texts to embed" }, field("Texts, one a line", texts), go, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const lines = texts.value.split("\n").map((x) => x.trim()).filter(Boolean);
    try {
      const found = await api("/v1/embeddings", { method: "POST", body: { model: reference, input: lines } });
      const vectors = found.data.map((item) => item.embedding);
      const head = h("tr", {}, h("th", { text: "" }), ...lines.map((_, i) => h("th", { scope: "col", text: `#${i + 1}` })));
      const rows = lines.map((line, i) => h("tr", {}, h("th", { scope: "row", text: `#${i + 1} ${line}` }),
        ...vectors.map((other) => h("td", { text: cosine(vectors[i], other).toFixed(3) }))));
      result.replaceChildren(h("table", {}, h("caption", { text: "Cosine similarity" }), h("thead", {}, head), h("tbody", {}, ...rows)),
        h("p", { class: "muted", text: `${vectors[0].length} dimensions · ${found.usage.prompt_tokens} tokens` }));
    } catch (exc) {
      showError(error, exc);
    }
  });
  return h("section", { class: "card playground", "aria-labelledby": "play-title" },
    h("h2", { id: "play-title", text: "Playground" }), form, result);
}

// ------------------------------------------------------------------ tokens

async function tokensView() {
  const error = alertBox();
  const owner = h("input", { type: "text", placeholder: me.user, list: "users" });
  const newUser = h("input", { type: "checkbox", id: "create-user" });
  const name = h("input", { type: "text", maxlength: 100, placeholder: "laptop" });
  const days = h("input", { type: "number", min: 1, step: 1, placeholder: "never" });
  const scopes = ["inference", "runner", "admin"].filter((scope) => me.is_admin || me.scopes.includes(scope));
  const boxes = scopes.map((scope) => h("input", { type: "checkbox", value: scope, id: `scope-${scope}`, checked: scope === "inference" }));
  const secret = h("div", { class: "secret", hidden: true });
  const table = h("tbody");
  const listFor = h("select", {});
  const create = h("form", { class: "card", "aria-labelledby": "new-title" },
    h("h2", { id: "new-title", text: "New token" }),
    field("Name", name),
    h("fieldset", {}, h("legend", { text: "Scopes" }),
      ...boxes.map((box) => h("div", { class: "check" }, box, h("label", { for: box.id, text: box.value })))),
    field("Expires in (days)", days, "Empty: never."),
    me.is_admin ? field("For user", owner, "Admins: any user. Empty: yourself.") : null,
    me.is_admin ? h("div", { class: "check" }, newUser, h("label", { for: newUser.id, text: "Create this user if new" })) : null,
    h("button", { type: "submit", text: "Create token" }), error, secret);

  const load = async () => {
    const who = listFor.value || me.user;
    const found = await api(`/v1/tokens?user=${encodeURIComponent(who)}`);
    table.replaceChildren(...found.data.map((item) => {
      const state = item.revoked_at ? "revoked" : item.expires_at && item.expires_at * 1000 < Date.now() ? "expired" : "active";
      const revoke = h("button", { type: "button", class: "small danger", text: "Revoke",
        "aria-label": `Revoke ${item.name || item.id}`, disabled: state !== "active" });
      revoke.addEventListener("click", async () => {
        try { await api(`/v1/tokens/${item.id}`, { method: "DELETE" }); await load(); } catch (exc) { showError(error, exc); }
      });
      return h("tr", { "data-token-id": item.id },
        h("td", { text: item.name || "—" }), h("td", {}, h("code", { text: item.id })),
        h("td", { text: item.scopes.join(", ") }), h("td", { text: `…${item.last4}` }),
        h("td", { text: date(item.created_at) }), h("td", { text: date(item.expires_at) }),
        h("td", { text: item.id === me.token_id ? `${state} (this one)` : state }), h("td", {}, revoke));
    }));
  };

  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = { name: name.value, scopes: boxes.filter((box) => box.checked).map((box) => box.value) };
    if (days.value) body.expires_in_days = Number(days.value);
    if (me.is_admin && owner.value.trim()) body.user = owner.value.trim();
    if (body.user && newUser.checked) body.create_user = true;
    try {
      const made = await api("/v1/tokens", { method: "POST", body });
      const value = h("input", { type: "text", readonly: true, value: made.token, id: "new-secret" });
      secret.replaceChildren(field(`Token for ${made.user}: copy it now, it is shown once`, value));
      secret.hidden = false;
      value.select();
      if (made.user !== listFor.value) await loadUsers(made.user);
      await load();
    } catch (exc) {
      showError(error, exc);
    }
  });

  const loadUsers = async (select) => {
    const users = me.is_admin ? (await api("/v1/users")).data.map((user) => user.id) : [me.user];
    listFor.replaceChildren(...users.map((user) => h("option", { value: user, text: user })));
    listFor.value = select || me.user;
    document.getElementById("users")?.remove();
    main.append(h("datalist", { id: "users" }, ...users.map((user) => h("option", { value: user }))));
  };
  listFor.addEventListener("change", load);

  main.replaceChildren(h("h1", { text: "Tokens" }), create,
    h("section", { class: "card", "aria-labelledby": "list-title" },
      h("div", { class: "row" }, h("h2", { id: "list-title", text: "Tokens" }),
        me.is_admin ? field("Of user", listFor) : null),
      h("table", { class: "tokens" },
        h("thead", {}, h("tr", {}, ...["Name", "Id", "Scopes", "Ends with", "Created", "Expires", "State", "Action"].map((x) => h("th", { scope: "col", text: x })))),
        table)));
  await loadUsers();
  await load();
}

// ------------------------------------------------------------------ usage

function barChart(title, points, unit, short = (label) => label.slice(5)) {
  const width = 640, height = 180, pad = 28;
  const top = Math.max(1, ...points.map((p) => p.value));
  const step = (width - pad) / Math.max(1, points.length);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height + 30}`, role: "img", "aria-label": title, class: "chart" });
  svg.append(s("line", { x1: pad, y1: height, x2: width, y2: height, class: "axis" }));
  svg.append(s("text", { x: 0, y: 12, class: "tick" }, String(top)));
  points.forEach((point, i) => {
    const barHeight = (point.value / top) * (height - 20);
    const barWidth = Math.max(2, Math.min(step - 4, 48));
    const x = pad + i * step + (step - barWidth) / 2;
    const bar = s("rect", { x, y: height - barHeight, width: barWidth, height: barHeight, class: "bar" });
    bar.append(s("title", {}, `${point.label}: ${point.value} ${unit}`));
    svg.append(bar);
    if (points.length <= 16 || i % Math.ceil(points.length / 8) === 0) {
      svg.append(s("text", { x: pad + i * step + step / 2, y: height + 16, "text-anchor": "middle", class: "tick" }, short(point.label)));
    }
  });
  return h("figure", {}, h("figcaption", { text: title }), svg);
}

function lastDays(count) {
  const days = [];
  const today = new Date();
  for (let i = count - 1; i >= 0; i--) {
    days.push(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i)).toISOString().slice(0, 10));
  }
  return days;
}

async function usageView() {
  const days = h("select", {}, ...[7, 30, 90].map((n) => h("option", { value: n, text: `${n} days`, selected: n === 30 })));
  const user = h("input", { type: "text", placeholder: "everyone" });
  const refresh = h("button", { type: "submit", text: "Refresh" });
  const body = h("div", { "aria-live": "polite" });
  const error = alertBox();
  const form = h("form", { class: "filters", "aria-label": "Usage filters" }, field("Period", days),
    me.is_admin ? field("User", user, "Admins see everyone's usage, or one user's.") : null, refresh);
  const load = async () => {
    error.hidden = true;
    const query = new URLSearchParams({ group_by: "day,model", days: days.value });
    if (me.is_admin && user.value.trim()) query.set("user", user.value.trim());
    try {
      const found = await api(`/v1/usage?${query}`);
      const byDay = new Map(lastDays(Number(days.value)).map((day) => [day, { requests: 0, tokens: 0 }]));
      const byModel = new Map();
      for (const row of found.data) {
        const day = byDay.get(row.day);
        if (day) { day.requests += row.requests; day.tokens += row.total_tokens; }
        const model = byModel.get(row.model) || { requests: 0, prompt: 0, completion: 0 };
        model.requests += row.requests; model.prompt += row.prompt_tokens; model.completion += row.completion_tokens;
        byModel.set(row.model, model);
      }
      const total = [...byModel.values()].reduce((sum, m) => sum + m.requests, 0);
      const tokens = [...byModel.values()].reduce((sum, m) => sum + m.prompt + m.completion, 0);
      const points = (key) => [...byDay].map(([label, value]) => ({ label, value: value[key] }));
      body.replaceChildren(
        h("p", { id: "usage-total", class: "big", "data-requests": total, text: `${total} ${total === 1 ? "request" : "requests"} · ${tokens} tokens since ${found.since}` }),
        h("div", { class: "charts" }, barChart("Requests per day", points("requests"), "requests"),
          barChart("Tokens per day", points("tokens"), "tokens"),
          barChart("Requests per model", [...byModel].map(([label, m]) => ({ label, value: m.requests })),
            "requests", (label) => label.split("/").pop().slice(0, 14)),
          barChart("Tokens per model", [...byModel].map(([label, m]) => ({ label, value: m.prompt + m.completion })),
            "tokens", (label) => label.split("/").pop().slice(0, 14))),
        h("table", { class: "per-model" }, h("caption", { text: "Per model" }),
          h("thead", {}, h("tr", {}, ...["Model", "Requests", "Prompt tokens", "Completion tokens"].map((x) => h("th", { scope: "col", text: x })))),
          h("tbody", {}, ...[...byModel].map(([name, m]) => h("tr", {}, h("td", { text: name }),
            h("td", { text: m.requests }), h("td", { text: m.prompt }), h("td", { text: m.completion }))))));
    } catch (exc) {
      showError(error, exc);
    }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  main.replaceChildren(h("h1", { text: me.is_admin ? "Usage (everyone)" : `Usage of ${me.user}` }), form, error, body);
  await load();
}

// ------------------------------------------------------------------ runners

async function runnersView() {
  const body = h("tbody");
  const note = h("p", { class: "muted", "aria-live": "polite" });
  const error = alertBox();
  main.replaceChildren(h("h1", { text: "Runners" }), note, error,
    h("table", { class: "runners" }, h("thead", {}, h("tr", {},
      ...["Model", "Version", "Queued", "Runner", "Owner", "Concurrency", "In flight", "Served", "Failed"].map((x) => h("th", { scope: "col", text: x })))), body));
  const load = async () => {
    try {
      const health = await api("/health");
      const rows = [];
      for (const version of health.runners || []) {
        const cells = (runner) => [runner.runner, runner.owner, runner.concurrency, runner.in_flight, runner.served, runner.failed];
        const runners = version.runners.length ? version.runners : [null];
        for (const runner of runners) {
          rows.push(h("tr", {}, h("td", {}, h("a", { href: `/${version.id}`, text: version.id })), h("td", { text: version.version }),
            h("td", { text: version.queued }), ...(runner ? cells(runner) : ["(none attached)", "", "", "", "", ""]).map((x) => h("td", { text: x }))));
        }
      }
      body.replaceChildren(...rows);
      note.textContent = `${(health.runners || []).length} runner-served versions · updated ${new Date().toLocaleTimeString()}`;
    } catch (exc) {
      showError(error, exc);
    }
  };
  await load();
  setInterval(load, 2000);
}

// ------------------------------------------------------------------ start

const VIEWS = { models: modelsView, model: modelView, tokens: tokensView, usage: usageView, runners: runnersView };

async function render() {
  const view = VIEWS[document.body.dataset.view] || modelsView;
  try {
    await view();
  } catch (exc) {
    if (exc.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      signIn(start);
      return;
    }
    const box = alertBox();
    showError(box, exc);
    main.replaceChildren(h("h1", { text: exc.status === 404 ? "Not found" : "Something went wrong" }), box);
  }
}

async function start() {
  if (!token()) {
    signIn(start);
    return;
  }
  try {
    await loadMe();
  } catch {
    sessionStorage.removeItem(TOKEN_KEY);
    signIn(start);
    return;
  }
  await render();
}

start();
