// Points an official SDK at the LLM double and runs a tool-call round trip.
//   node sdk_check.mjs anthropic|openai BASE_URL API_KEY
// Prints one JSON object with what the SDK saw; exits non-zero on any surprise.
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

const [provider, baseURL, apiKey] = process.argv.slice(2);
const out = { provider };

const schema = {
  type: "object",
  properties: { path: { type: "string", description: "file to read" } },
  required: ["path"],
};

async function anthropic() {
  const client = new Anthropic({ apiKey, baseURL, maxRetries: 3 });
  const tools = [{ name: "read_file", description: "Read a file", input_schema: schema,
    cache_control: { type: "ephemeral" } }];
  const system = [{ type: "text", text: "You read files.", cache_control: { type: "ephemeral" } }];
  const first = await client.messages.create({
    model: "claude-sonnet-4-5", max_tokens: 1024, system, tools,
    messages: [{ role: "user", content: "What does a.txt say?" }],
  });
  out.first_stop = first.stop_reason;
  const use = first.content.find((b) => b.type === "tool_use");
  out.tool_name = use.name;
  out.tool_input = use.input;
  const messages = [
    { role: "user", content: "What does a.txt say?" },
    { role: "assistant", content: first.content },
    { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "hello from a.txt" }] },
  ];
  const second = await client.messages.create({ model: "claude-sonnet-4-5", max_tokens: 1024, system, tools, messages });
  out.second_stop = second.stop_reason;
  out.text = second.content.filter((b) => b.type === "text").map((b) => b.text).join("");
  out.usage = second.usage;
  // A tool_result that answers no tool_use: the SDK must see the API's own 400.
  try {
    await client.messages.create({ model: "claude-sonnet-4-5", max_tokens: 10, messages: [
      { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_nope", content: "x" }] }] });
    out.bad_request = "accepted";
  } catch (e) {
    out.bad_request = { status: e.status, type: e.error?.error?.type, name: e.constructor.name };
  }
  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);
}

async function openai() {
  const client = new OpenAI({ apiKey, baseURL, maxRetries: 3 });
  const tools = [{ type: "function", function: { name: "read_file", description: "Read a file", parameters: schema } }];
  const messages = [{ role: "system", content: "You read files." }, { role: "user", content: "What does a.txt say?" }];
  const first = await client.chat.completions.create({ model: "gpt-4o", messages, tools, max_tokens: 1024 });
  const choice = first.choices[0];
  out.first_stop = choice.finish_reason;
  const tc = choice.message.tool_calls[0];
  out.tool_name = tc.function.name;
  out.tool_input = JSON.parse(tc.function.arguments);
  messages.push(choice.message);
  messages.push({ role: "tool", tool_call_id: tc.id, content: "hello from a.txt" });
  const second = await client.chat.completions.create({ model: "gpt-4o", messages, tools, max_tokens: 1024 });
  out.second_stop = second.choices[0].finish_reason;
  out.text = second.choices[0].message.content;
  out.usage = second.usage;
  try {
    await client.chat.completions.create({ model: "gpt-4o", messages: [
      { role: "user", content: "hi" }, { role: "tool", tool_call_id: "call_nope", content: "x" }] });
    out.bad_request = "accepted";
  } catch (e) {
    out.bad_request = { status: e.status, type: e.error?.type ?? e.type, name: e.constructor.name };
  }
  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);
}

try {
  await (provider === "anthropic" ? anthropic() : openai());
  console.log(JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ ...out, error: String(e), status: e.status }));
  process.exit(1);
}
