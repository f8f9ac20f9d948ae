// Checks the JavaScript mask reference against the test vectors: node check_masks.mjs MASKS_JS VECTORS_JSON.
// Prints one JSON line: {"cases": n, "mismatches": [...]} (empty when every state, word and flag agrees).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [masksPath, vectorsPath] = process.argv.slice(2);
const { MaskStream, rowState } = await import(pathToFileURL(masksPath).href);
const vectors = JSON.parse(readFileSync(vectorsPath, "utf8"));
const mismatches = [];
vectors.cases.forEach((c, index) => {
  const sites = c.sites.map((s) => ({ ...s, kind: "bernoulli" }));
  for (let r = 0; r < c.rows; r++) {
    const generator = rowState(BigInt(c.seed), c.first_row + r, 0);
    const state = generator.state.toString(16).padStart(32, "0");
    if (state !== c.row_states[r].state) mismatches.push(`case ${index} row ${r}: state ${state}`);
    const words = [0, 1, 2, 3].map(() => generator.next().toString(16).padStart(16, "0"));
    if (words.join() !== c.first_words[r].join()) mismatches.push(`case ${index} row ${r}: words ${words}`);
  }
  // Drawn in two chunks (1 sample, then the rest): a stream continues where it stopped.
  const stream = new MaskStream(sites, c.seed, c.rows, c.first_row);
  const chunks = [stream.next(1), stream.next(c.samples - 1)];
  for (const site of c.sites) {
    const units = site.noise_shape.reduce((a, b) => a * b, 1);
    for (let t = 0; t < c.samples; t++) {
      const [chunk, tt] = t === 0 ? [chunks[0], 0] : [chunks[1], t - 1];
      for (let b = 0; b < c.rows; b++) {
        const start = (tt * c.rows + b) * units;
        const flags = Array.from(chunk[site.feed_name].slice(start, start + units)).join("");
        if (flags !== c.keep[site.feed_name][t][b]) mismatches.push(`case ${index} ${site.feed_name} t=${t} b=${b}`);
      }
    }
  }
});
console.log(JSON.stringify({ cases: vectors.cases.length, mismatches }));
