// londonlm playground: posts to /v1/generate/stream and renders server-sent events as they arrive.
"use strict";
const $ = (id) => document.getElementById(id);
const sliders = ["temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty"];
let controller = null;
let eras = [];  // era names from /health; the era slider's 0 means none

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
      const err = await r.json().catch(() => ({ error: r.statusText }));
      const retry = r.headers.get("Retry-After");
      status(`error ${r.status}: ${err.error}` + (retry ? ` (retry in ${retry}s)` : ""), true);
      return;
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = handleEvents(buffer + decoder.decode(value, { stream: true }), (event, data) => {
        if (event === "message") $("out-text").textContent += data.text;
        else if (event === "sample") {
          const secs = (performance.now() - started) / 1000;
          status(`${data.new_tokens} tokens in ${secs.toFixed(1)} s · ${(data.new_tokens / secs).toFixed(1)} tokens/s · ${data.finish_reason} · seed ${data.seed}`);
        } else if (event === "error") status("error: " + data.error, true);
      });
    }
  } catch (e) {
    if (e.name === "AbortError") status("stopped");
    else status("error: " + e, true);
  } finally {
    setBusy(false);
    controller = null;
  }
}

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
