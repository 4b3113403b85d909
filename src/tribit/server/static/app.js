// tribit's chat page: plain JS, no build step; streams /v1/chat/completions over SSE.
"use strict";
const log = document.getElementById("log");
const input = document.getElementById("input");
const form = document.getElementById("form");
const stopBtn = document.getElementById("stop");
const speed = document.getElementById("speed");
const keyBox = document.getElementById("key");
const messages = [];
let controller = null;
// what the model file says about itself (/v1/models meta): a description and example
// prompts (a demo model's), the temperature its makers recommend; a file without them
// (a real chat model) shows nothing more and is sampled at 0.7
let temperature = 0.7;

// The API key (servers started with --api-key) lives only for this tab's session.
keyBox.value = sessionStorage.getItem("tribit.apiKey") || "";
keyBox.hidden = !keyBox.value;
keyBox.addEventListener("change", () => {
  sessionStorage.setItem("tribit.apiKey", keyBox.value.trim());
  loadModel();
});

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = keyBox.value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

// The reply as the server sends it (it drops a reply's leading blank: the word separator
// of a model trained on "...Answer: text", like the embedded bAbI model).
function shown(answer) {
  return answer;
}

function add(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

// An error response's message: OpenAI-style bodies, or the status line for anything else.
async function errorMessage(resp) {
  if (resp.status === 401) {
    keyBox.hidden = false;
    keyBox.focus();
    return "this server needs an API key: enter it at the top, then send again";
  }
  try {
    const j = await resp.json();
    if (j.error && j.error.message) return j.error.message;
  } catch (_) { /* not JSON */ }
  return "HTTP " + resp.status + " " + resp.statusText;
}

function loadModel() {
  const label = document.getElementById("model");
  fetch("/v1/models", { headers: headers() }).then(async r => {
    if (!r.ok) { label.textContent = r.status === 503 ? "model loading" : await errorMessage(r); return; }
    const j = await r.json();
    label.textContent = j.data && j.data.length ? j.data[0].id : "no model";
    showCard((j.data && j.data.length && j.data[0].meta) || {});
  }).catch(() => { label.textContent = "server unreachable"; });
}

function showCard(meta) {
  const about = document.getElementById("about");
  const examples = document.getElementById("examples");
  document.getElementById("description").textContent = meta.description || "";
  examples.replaceChildren();
  for (const text of Array.isArray(meta.examples) ? meta.examples : []) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "example";
    b.textContent = text;
    b.title = "send this example";
    b.addEventListener("click", () => {
      if (controller) return;
      input.value = text;
      form.requestSubmit();
    });
    examples.appendChild(b);
  }
  about.hidden = !meta.description && !examples.children.length;
  if (typeof meta.temperature === "number") temperature = meta.temperature;
}
loadModel();

input.addEventListener("keydown", e => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
});
stopBtn.addEventListener("click", () => { if (controller) controller.abort(); });

form.addEventListener("submit", async e => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || controller) return;
  input.value = "";
  add("user", text);
  messages.push({ role: "user", content: text });
  const out = add("assistant", "");
  controller = new AbortController();
  stopBtn.disabled = false;
  speed.textContent = "";
  let answer = "", n = 0, t0 = 0, frame = 0, serverTps = 0;
  // Draw at most once per frame: a fast stream (hundreds of tokens/s) must not keep the
  // page busy re-laying out a growing text on every token (the Stop button must stay usable).
  const render = () => {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    out.textContent = shown(answer);
    log.scrollTop = log.scrollHeight;
    const s = (performance.now() - t0) / 1000;
    // the server's own count, once it comes, is exact (pieces can hold several tokens, or none)
    const tps = serverTps || (t0 && s > 0 && n > 1 ? (n - 1) / s : 0);
    if (tps) speed.textContent = tps.toFixed(1) + " tokens/s";
  };
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ messages, stream: true, max_tokens: 512, temperature }),
      signal: controller.signal,
    });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, i).trim();
        buf = buf.slice(i + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const c = j.choices && j.choices[0];
        const piece = c && c.delta && c.delta.content;
        if (piece) {
          if (!t0) t0 = performance.now();
          n++;
          answer += piece;
          if (!frame) frame = requestAnimationFrame(render);
        }
        const tps = j.timings && j.timings.predicted_per_second;
        if (tps) serverTps = tps;
      }
    }
    render();
    messages.push({ role: "assistant", content: shown(answer) });
  } catch (err) {
    if (err.name === "AbortError") {
      render();
      messages.push({ role: "assistant", content: shown(answer) });
    } else {
      // a failed turn is not resent with the next message (templates want roles to alternate)
      if (frame) cancelAnimationFrame(frame);
      messages.pop();
      out.className = "msg error";
      out.textContent = String(err.message || err);
    }
  } finally {
    controller = null;
    stopBtn.disabled = true;
  }
});
