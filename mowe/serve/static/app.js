// The mowe serve page: pick or record audio, send it with an instruction to /v1/chat/completions (streamed),
// show the answer as it arrives and the router's choice of weak encoders. Plain browser APIs, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const FORMATS = ["wav", "mp3", "flac", "ogg"];
let modelId = null;
let audio = null; // {data: base64, format}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "muted";
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let out = "";
  for (let i = 0; i < bytes.length; i += 0x8000) out += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(out);
}

// Decoded audio -> 16-bit mono WAV bytes (channels averaged), for recordings and formats the server does not read.
function encodeWav(buffer) {
  const n = buffer.length, rate = buffer.sampleRate, mono = new Float32Array(n);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const ch = buffer.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += ch[i] / buffer.numberOfChannels;
  }
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (o, s) => { for (let i = 0; i < s.length; i++) view.setUint8(o + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, mono[i])) * 0x7fff, true);
  return view.buffer;
}

async function useBlob(blob, name) {
  const ext = (name.split(".").pop() || "").toLowerCase();
  let bytes = await blob.arrayBuffer(), format = ext;
  if (!FORMATS.includes(ext)) { // e.g. a browser recording (webm/opus): decode here, send WAV
    const ctx = new AudioContext();
    bytes = encodeWav(await ctx.decodeAudioData(bytes));
    ctx.close();
    format = "wav";
  }
  audio = {data: toBase64(bytes), format: format};
  $("preview").src = URL.createObjectURL(blob);
  $("preview").hidden = false;
  $("audio-label").textContent = `${name} (${(bytes.byteLength / 1024).toFixed(1)} KiB, ${format})`;
  $("submit").disabled = false;
}

$("audio-file").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  try { await useBlob(file, file.name); setStatus(""); } catch (e) { setStatus(`cannot read ${file.name}: ${e}`, true); }
});

let recorder = null;
$("record").addEventListener("click", async () => {
  if (recorder) { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const parts = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => parts.push(e.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      $("record").textContent = "Record"; $("record").classList.remove("recording");
      recorder = null;
      try { await useBlob(new Blob(parts), "recording.webm"); } catch (e) { setStatus(`recording failed: ${e}`, true); }
    };
    recorder.start();
    $("record").textContent = "Stop"; $("record").classList.add("recording");
  } catch (e) { setStatus(`no microphone: ${e}`, true); }
});

function showRouter(route) {
  const box = $("router");
  box.replaceChildren();
  if (!route || !route.length) { box.textContent = "(this model has no weak encoders)"; return; }
  for (const clip of route) {
    const div = document.createElement("div");
    div.className = "clip";
    const chosen = new Set(clip.selected.map((s) => s.encoder));
    div.innerHTML = `<div>clip ${clip.clip}: <b class="chosen">${[...chosen].join(", ")}</b></div>`;
    for (const [name, gate] of Object.entries(clip.gates)) {
      const row = document.createElement("div");
      row.className = "gate" + (chosen.has(name) ? " selected" : "");
      row.innerHTML = `<span class="name"></span><span class="bar"><span></span></span><span>${gate.toFixed(3)}</span>`;
      row.querySelector(".name").textContent = name;
      row.querySelector(".bar > span").style.width = `${Math.round(100 * Math.min(1, Math.max(0, gate)))}%`;
      div.appendChild(row);
    }
    box.appendChild(div);
  }
}

async function ask() {
  $("submit").disabled = true;
  $("answer").textContent = "";
  $("answer").className = "";
  setStatus("waiting for the model…");
  const body = {
    model: modelId, stream: true,
    max_tokens: Number($("max-tokens").value) || 64, temperature: Number($("temperature").value) || 0,
    messages: [{role: "user", content: [{type: "input_audio", input_audio: audio},
                                        {type: "text", text: $("instruction").value}]}],
  };
  try {
    const res = await fetch("/v1/chat/completions", {method: "POST", headers: {"content-type": "application/json"},
                                                     body: JSON.stringify(body)});
    if (!res.ok) throw new Error((await res.json()).error.message);
    const reader = res.body.getReader(), decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += decoder.decode(value, {stream: true});
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, end).trim();
        buf = buf.slice(end + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") { setStatus("done"); continue; }
        const msg = JSON.parse(data);
        if (msg.error) throw new Error(msg.error.message);
        if (msg.mowe) showRouter(msg.mowe.router);
        for (const c of msg.choices) {
          if (c.delta && c.delta.content) $("answer").textContent += c.delta.content;
          if (c.finish_reason) setStatus(`done (${c.finish_reason})`);
        }
      }
    }
    $("answer").dataset.done = "1";
  } catch (e) {
    $("answer").className = "error";
    $("answer").textContent = String(e.message || e);
    setStatus("error", true);
  } finally {
    $("submit").disabled = false;
  }
}

$("submit").addEventListener("click", ask);

fetch("/v1/models").then((r) => r.json()).then((m) => {
  modelId = m.data[0].id;
  $("model-name").textContent = modelId;
}).catch((e) => setStatus(`cannot reach the server: ${e}`, true));
