// londonlm playground: posts to /v1/generate/stream and renders server-sent events as they arrive;
// for a chat model (/health says "chat": true) also a chat mode that streams answers from
// /v1/chat/completions, keeping the conversation and setting the year of the system line.
"use strict";
const $ = (id) => document.getElementById(id);
const sliders = ["temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty"];
let controller = null;
let eras = [];  // era names from /health; the era slider's 0 means none
let modelId = null;  // /health's model name: the "model" of OpenAI-style requests

function bindSlider(name) {
  const input = $(name), out = $(name + "-out");
  const show = () => { out.textContent = input.value; };
  input.addEventListener("input", show);
  show();
}

function showEra() {
  const i = parseInt($("era").value, 10);
  $("era-out").textContent = i > 0 ? eras[i - 1] : (eras.length ? "none" : "none (model has no era tokens)");
}

function setSlider(name, value, max) {
  const input = $(name);
  if (max !== undefined) input.max = max;
  if (value !== undefined && value !== null) input.value = value;
  $(name + "-out").textContent = input.value;
}

async function loadHealth() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    const params = h.params >= 1e6 ? (h.params / 1e6).toFixed(1) + "M" : (h.params / 1e3).toFixed(0) + "k";
    $("model-info").textContent = `${h.model} · ${params} parameters · step ${h.step ?? "?"} · ${h.device} · context ${h.context_length}`;
    const d = h.defaults || {};
    setSlider("temperature", d.temperature);
    setSlider("top_p", d.top_p);
    setSlider("top_k", d.top_k);
    setSlider("max_new_tokens", Math.min(d.max_new_tokens, h.limits.max_new_tokens_limit), h.limits.max_new_tokens_limit);
    setSlider("repetition_penalty", d.repetition_penalty);
    eras = h.eras || [];
    $("era").max = eras.length;
    $("era").disabled = !eras.length;
    showEra();
    modelId = h.model;
    $("modes").hidden = !h.chat;
    setMode(h.chat ? "chat" : "text");
  } catch (e) {
    $("model-info").textContent = "could not reach the server: " + e;
  }
}

function request() {
  const body = { prompt: $("prompt").value };
  body.temperature = parseFloat($("temperature").value);
  body.top_p = parseFloat($("top_p").value);
  body.top_k = parseInt($("top_k").value, 10);
  body.max_new_tokens = parseInt($("max_new_tokens").value, 10);
  body.repetition_penalty = parseFloat($("repetition_penalty").value);
  const era = parseInt($("era").value, 10);
  if (era > 0) body.era = eras[era - 1];
  if ($("seed").value !== "") body.seed = parseInt($("seed").value, 10);
  return body;
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("stop").disabled = !busy;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "muted";
}

// Feeds a streamed response body to consume(buffer) as it arrives; consume returns the
// unfinished tail (a server-sent event split across network reads) to prepend to the next read.
async function readBody(response, consume) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = consume(buffer + decoder.decode(value, { stream: true }));
  }
}

// Parse "event: x\ndata: {...}\n\n" blocks; returns the unparsed tail.
function handleEvents(buffer, onEvent) {
  let idx;
  while ((idx = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, idx);
    buffer = buffer.slice(idx + 2);
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (data) onEvent(event, JSON.parse(data));
  }
  return buffer;
}

async function generate(ev) {
  ev.preventDefault();
  const body = request();
  $("out-prompt").textContent = body.prompt;
  $("out-text").textContent = "";
  setBusy(true);
  status("generating…");
  controller = new AbortController();
  const started = performance.now();
  try {
    const r = await fetch("/v1/generate/stream", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({ error: { message: r.statusText } }));
      const retry = r.headers.get("Retry-After");
      status(`error ${r.status}: ${(err.error && err.error.message) || r.statusText}` + (retry ? ` (retry in ${retry}s)` : ""), true);
      return;
    }
    await readBody(r, (buffer) => handleEvents(buffer, (event, data) => {
        if (event === "message") $("out-text").textContent += data.text;
        else if (event === "sample") {
          const secs = (performance.now() - started) / 1000;
          status(`${data.new_tokens} tokens in ${secs.toFixed(1)} s · ${(data.new_tokens / secs).toFixed(1)} tokens/s · ${data.finish_reason} · seed ${data.seed}`);
        } else if (event === "error") status("error: " + data.error.message, true);
      }));
  } catch (e) {
    if (e.name === "AbortError") status("stopped");
    else status("error: " + e, true);
  } finally {
    setBusy(false);
    controller = null;
  }
}

// ------------------------------------------------------------------ chat mode

const PLACE = "Old Bailey, London";  // the system line the chat model was trained with
let conversation = [];  // the messages so far: {role: "user" | "assistant", content}

function setMode(mode) {
  const chat = mode === "chat";
  $("chat").hidden = !chat;
  $("form").hidden = chat;
  $("output").hidden = chat;
  $("mode-chat").setAttribute("aria-pressed", String(chat));
  $("mode-text").setAttribute("aria-pressed", String(!chat));
}

function showYear() {
  $("system-line").textContent = `${PLACE}, ${$("year").value}.`;
}

function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "Q." : "A.";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(who, " ", body);
  $("messages").append(li);
  li.scrollIntoView({ block: "nearest" });
  return body;
}

function chatRequest() {
  const body = {
    model: modelId, messages: conversation, stream: true, year: parseInt($("year").value, 10),
    temperature: parseFloat($("chat-temperature").value), max_tokens: parseInt($("chat-max").value, 10),
  };
  if ($("chat-seed").value !== "") body.seed = parseInt($("chat-seed").value, 10);
  return body;
}

function setChatBusy(busy) {
  $("send").disabled = busy;
  $("reset").disabled = busy;
  $("chat-stop").disabled = !busy;
}

// OpenAI-style stream: "data: {chunk}" blocks, then "data: [DONE]"; returns the unparsed tail.
function handleChunks(buffer, onChunk) {
  let idx;
  while ((idx = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, idx);
    buffer = buffer.slice(idx + 2);
    for (const line of block.split("\n")) {
      if (line.startsWith("data: ") && line.slice(6) !== "[DONE]") onChunk(JSON.parse(line.slice(6)));
    }
  }
  return buffer;
}

async function ask(ev) {
  ev.preventDefault();
  const question = $("question").value.trim();
  if (!question) return status("type a question first", true);
  conversation.push({ role: "user", content: question });
  addMessage("user", question);
  const answer = addMessage("assistant", "");
  $("question").value = "";
  setChatBusy(true);
  status("answering…");
  controller = new AbortController();
  const started = performance.now();
  let finish = null, pieces = 0;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(chatRequest()), signal: controller.signal,
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({ error: { message: r.statusText } }));
      throw new Error(`error ${r.status}: ${(err.error && err.error.message) || r.statusText}`);
    }
    await readBody(r, (buffer) => handleChunks(buffer, (chunk) => {
        if (chunk.error) throw new Error("error: " + chunk.error.message);
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) return;
        if (choice.delta && choice.delta.content) { answer.textContent += choice.delta.content; pieces += 1; }
        if (choice.finish_reason) finish = choice.finish_reason;
      }));
    const secs = (performance.now() - started) / 1000;
    status(`answered in ${secs.toFixed(1)} s · ${pieces} pieces · ${finish || "?"} · ${$("system-line").textContent}`);
  } catch (e) {
    status(e.name === "AbortError" ? "stopped" : (e.message || String(e)), e.name !== "AbortError");
  } finally {
    const text = answer.textContent.trim();
    if (text) conversation.push({ role: "assistant", content: text });
    else { conversation.pop(); answer.textContent = "(no answer)"; answer.parentNode.classList.add("empty"); }
    setChatBusy(false);
    controller = null;
  }
}

$("chat-form").addEventListener("submit", ask);
$("chat-stop").addEventListener("click", () => controller && controller.abort());
$("reset").addEventListener("click", () => { conversation = []; $("messages").textContent = ""; status("new conversation"); });
$("year").addEventListener("input", showYear);
$("mode-chat").addEventListener("click", () => setMode("chat"));
$("mode-text").addEventListener("click", () => setMode("text"));
["chat-temperature", "chat-max"].forEach(bindSlider);
showYear();

$("form").addEventListener("submit", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
$("copy").addEventListener("click", async () => {
  const text = $("out-prompt").textContent + $("out-text").textContent;
  try { await navigator.clipboard.writeText(text); status("copied"); }
  catch (e) {  // clipboard API needs a secure context; fall back to selecting the text
    const range = document.createRange();
    range.selectNodeContents($("output"));
    const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    status(document.execCommand("copy") ? "copied" : "select the text and copy it manually");
  }
});
sliders.forEach(bindSlider);
$("era").addEventListener("input", showEra);
loadHealth();
