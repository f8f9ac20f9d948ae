// The page of `mcdrop export-web`: a model's uncertainty computed in the browser with LiteRT.js (WebAssembly).
//
// - mc_summary.b1_tT.tflite: one invoke draws T dropout masks inside the graph and returns the summary
//   (mean, std, predicted class, entropies, mutual information, variation ratio; regression: mean, std,
//   predictive std, interval) — what the page shows;
// - mc_masked.b1_tT.tflite with masks from masks.js: the server's seeded answer, reproduced on the device.
//
// window.mcdrop exposes both for scripts and tests: ready, config, summary(x), maskedMean(x, seed), show(x).

import { loadLiteRt, loadAndCompile, Tensor } from "@litertjs/core";
import { MaskStream } from "./masks.js";

const config = await (await fetch("./model/model.json")).json();
const T = config.samples;
const featureCount = config.input.row_shape.reduce((a, b) => a * b, 1);

function status(text) {
  document.getElementById("status").textContent = text;
}

await loadLiteRt(new URL("./vendor/@litertjs/core/wasm/", location.href).href);
const graphs = {};
for (const [kind, file] of Object.entries(config.graphs)) {
  graphs[kind] = await loadAndCompile(new URL(`./model/${file}`, location.href).href, { accelerator: "wasm" });
}

async function run(graph, feeds) {
  const inputs = {};
  for (const [name, [data, shape]] of Object.entries(feeds)) inputs[name] = new Tensor(data, shape);
  const started = performance.now();
  const outputs = await graph.run(inputs);
  const ms = performance.now() - started;
  const found = {};
  for (const [name, tensor] of Object.entries(outputs)) {
    found[name] = Array.from(await tensor.data());
    tensor.delete();
  }
  for (const tensor of Object.values(inputs)) tensor.delete();
  return { outputs: found, ms };
}

function rowFeeds(x) {
  return { [config.input.name]: [Float32Array.from(x), [1, ...config.input.row_shape]] };
}

/** mc_summary: one invoke, T in-graph samples; the summary by output name, and the invoke's milliseconds. */
async function summary(x) {
  const { outputs, ms } = await run(graphs.mc_summary, rowFeeds(x));
  return { ...outputs, ms };
}

/** mc_masked with the server's masks for `seed` (masks.js): the T samples' mean as a server computes it
 * (float64 sum over samples in order, divided by T, rounded to float32). */
async function maskedMean(x, seed) {
  const masks = new MaskStream(config.sites, BigInt(seed), 1, 0).next(T);
  const feeds = rowFeeds(x);
  for (const site of config.sites) feeds[site.feed_name] = [masks[site.feed_name], [T, 1, ...site.noise_shape]];
  const { outputs, ms } = await run(graphs.mc_masked, feeds);
  const samples = outputs[config.output.name];
  const width = samples.length / T;
  const mean = new Array(width).fill(0);
  for (let t = 0; t < T; t++) for (let j = 0; j < width; j++) mean[j] += samples[t * width + j];
  return { mean: mean.map((v) => Math.fround(v / T)), ms };
}

// The input: a drawing pad for image-like inputs, a text field otherwise. ---------------------------------

const [low, high] = config.input.range;
const side = config.input.image ? config.input.image[0] : 0;
let pixels = new Float32Array(featureCount);
const pad = document.getElementById("pad");

function paint() {
  if (!side) return;
  const context = pad.getContext("2d");
  const image = context.createImageData(side, side);
  for (let i = 0; i < side * side; i++) {
    const level = Math.round((255 * (pixels[i] - low)) / (high - low));
    image.data.set([level, level, level, 255], i * 4);
  }
  context.putImageData(image, 0, 0);
}

function drawAt(event) {
  const box = pad.getBoundingClientRect();
  const cx = ((event.clientX - box.left) / box.width) * side;
  const cy = ((event.clientY - box.top) / box.height) * side;
  for (let r = 0; r < side; r++) {
    for (let c = 0; c < side; c++) {
      const d2 = (c + 0.5 - cx) ** 2 + (r + 0.5 - cy) ** 2;
      const ink = Math.exp(-d2 / (2 * (side / 16) ** 2 + 0.35));
      pixels[r * side + c] = Math.min(high, pixels[r * side + c] + ink * (high - low) * 0.35);
    }
  }
  paint();
}

function noise() {
  pixels = Float32Array.from({ length: featureCount }, () => low + Math.random() * (high - low));
}

// The answer: probabilities with error bars (mean ± std over the T samples) and the uncertainty. -----------

const fmt = (v, digits = 3) => Number(v).toFixed(digits);

function chart(result) {
  const svg = document.getElementById("chart");
  const labels = config.output.labels;
  const width = 430, height = 250, left = 34, bottom = 24, top = 10;
  const barWidth = (width - left - 10) / labels.length;
  const y = (p) => top + (1 - Math.max(0, Math.min(1, p))) * (height - top - bottom);
  let parts = [`<line x1="${left}" y1="${y(0)}" x2="${width}" y2="${y(0)}" stroke="#9aa3b2"/>`];
  for (const tick of [0, 0.5, 1]) {
    parts.push(`<text x="${left - 6}" y="${y(tick) + 4}" font-size="11" text-anchor="end">${tick}</text>`);
  }
  labels.forEach((label, i) => {
    const mean = result.mean[i], std = result.std[i];
    const x = left + i * barWidth + barWidth * 0.15, w = barWidth * 0.7, mid = x + w / 2;
    const best = i === result.predicted_class[0];
    parts.push(`<rect x="${x}" y="${y(mean)}" width="${w}" height="${y(0) - y(mean)}" fill="${best ? "#2f6fde" : "#a9c1ec"}"/>`);
    parts.push(`<line x1="${mid}" x2="${mid}" y1="${y(mean - std)}" y2="${y(mean + std)}" stroke="#1d2330" stroke-width="1.5"/>`);
    for (const v of [mean - std, mean + std]) {
      parts.push(`<line x1="${mid - 5}" x2="${mid + 5}" y1="${y(v)}" y2="${y(v)}" stroke="#1d2330" stroke-width="1.5"/>`);
    }
    parts.push(`<text x="${mid}" y="${height - 6}" font-size="12" text-anchor="middle">${label}</text>`);
  });
  svg.innerHTML = parts.join("");
}

function facts(result) {
  const rows = config.output.task === "classification"
    ? [["predicted", config.output.labels[result.predicted_class[0]]],
       ["mutual information (epistemic)", `${fmt(result.mutual_information[0])} nats`],
       ["predictive entropy (total)", `${fmt(result.predictive_entropy[0])} nats`],
       ["expected entropy (aleatoric)", `${fmt(result.expected_entropy[0])} nats`],
       ["variation ratio", fmt(result.variation_ratio[0])],
       [`mc_summary invoke, T = ${T}`, `${fmt(result.ms, 2)} ms (WebAssembly)`]]
    : [["mean", result.mean.map((v) => fmt(v)).join(", ")],
       ["std (epistemic)", result.std.map((v) => fmt(v)).join(", ")],
       ["predictive std", result.predictive_std.map((v) => fmt(v)).join(", ")],
       ["95 % interval", result.lower.map((v, i) => `[${fmt(v)}, ${fmt(result.upper[i])}]`).join(", ")],
       [`mc_summary invoke, T = ${T}`, `${fmt(result.ms, 2)} ms (WebAssembly)`]];
  document.getElementById("facts").innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
  const verdict = document.getElementById("verdict");
  if (config.output.task === "classification") {
    const unsure = result.mutual_information[0] > config.mi_threshold;
    verdict.className = `verdict ${unsure ? "unsure" : "sure"}`;
    verdict.textContent = unsure
      ? "The model does not know: its dropout samples disagree (high mutual information)."
      : "The samples agree: the model is confident in this answer.";
  }
}

async function show(x) {
  pixels = Float32Array.from(x);
  paint();
  const result = await summary(pixels);
  if (config.output.task === "classification") chart(result);
  facts(result);
  return result;
}

// Wiring. -------------------------------------------------------------------------------------------------

document.getElementById("title").textContent = `${config.name} v${config.version} · uncertainty on the device`;
document.getElementById("subtitle").textContent =
  `LiteRT.js (WebAssembly) runs mc_summary with T = ${T} dropout samples per invoke; nothing leaves the browser.`;
if (side) {
  document.getElementById("input-pad").hidden = false;
  pad.width = side;
  pad.height = side;
  let drawing = false;
  pad.addEventListener("pointerdown", (e) => { drawing = true; drawAt(e); });
  pad.addEventListener("pointermove", (e) => { if (drawing) drawAt(e); });
  window.addEventListener("pointerup", () => { if (drawing) { drawing = false; show(pixels); } });
  document.getElementById("clear").onclick = () => show(new Float32Array(featureCount).fill(low));
  document.getElementById("noise").onclick = () => { noise(); show(pixels); };
} else {
  document.getElementById("input-text").hidden = false;
  const values = document.getElementById("values");
  document.getElementById("predict").onclick = () => show(values.value.split(",").map(Number));
  document.getElementById("noise-text").onclick = () => {
    noise();
    values.value = Array.from(pixels, (v) => fmt(v)).join(", ");
    show(pixels);
  };
}

window.mcdrop = { config, summary, maskedMean, show };
await show(new Float32Array(featureCount).fill(low));
status(`ready · ${config.name} v${config.version} · ${config.variant || "float32"} · graphs: ${Object.values(config.graphs).join(", ")}`);
window.mcdropReady = true;
