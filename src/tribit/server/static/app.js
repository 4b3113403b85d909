// tribit's chat page: plain JS, streams /v1/chat/completions over SSE.
"use strict";
const log = document.getElementById("log");
const input = document.getElementById("input");
const form = document.getElementById("form");
const stopBtn = document.getElementById("stop");
const speed = document.getElementById("speed");
const messages = [];
let controller = null;

function add(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

fetch("/v1/models").then(r => r.json()).then(j => {
  document.getElementById("model").textContent = j.data ? j.data[0].id : "model loading";
}).catch(() => {});

input.addEventListener("keydown", e => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
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
  let answer = "", n = 0, t0 = 0;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages, stream: true, max_tokens: 512, temperature: 0.7 }),
      signal: controller.signal,
    });
    if (!resp.ok) throw new Error((await resp.json()).error.message);
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const piece = j.choices[0] && j.choices[0].delta && j.choices[0].delta.content;
        if (piece) {
          if (!t0) t0 = performance.now();
          n++;
          answer += piece;
          out.textContent = answer;
          log.scrollTop = log.scrollHeight;
          const s = (performance.now() - t0) / 1000;
          if (s > 0 && n > 1) speed.textContent = ((n - 1) / s).toFixed(1) + " tokens/s";
        }
      }
    }
    messages.push({ role: "assistant", content: answer });
  } catch (err) {
    if (err.name !== "AbortError") { out.className = "msg error"; out.textContent = String(err.message || err); }
    else messages.push({ role: "assistant", content: answer });
  } finally {
    controller = null;
    stopBtn.disabled = true;
  }
});
