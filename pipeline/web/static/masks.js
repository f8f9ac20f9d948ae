// mcdrop's dropout-mask scheme "pcg64-per-row-v1" in JavaScript: the reference port of
// mcdrop.serving.models.masks.MaskStream (keep flags only), specified in docs/mask-scheme.md and checked
// against docs/mask-vectors.json. With it, an app feeds mc_masked.tflite the very masks a server draws
// for a seed, and gets the server's seeded answer.
//
// Usage:
//   const stream = new MaskStream(sites, seed, batch, firstRow);   // sites: manifest dropout_layers
//   const feeds = stream.next(samples);    // {feed_name: Uint8Array [samples * batch * units]}
// Successive next() calls continue every row's stream, exactly as the server does for chunks.

const MASK_64 = (1n << 64n) - 1n;
const MASK_128 = (1n << 128n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;
const MUL_1 = 0xbf58476d1ce4e5b9n;
const MUL_2 = 0x94d049bb133111ebn;
const PCG_MULTIPLIER = 0x2360ed051fc65da44385df649fccf645n;
export const SCHEME = "pcg64-per-row-v1";
export const LEVELS = 65536;

/** SplitMix64's output function: a bijection on 64-bit words. */
export function mix(z) {
  z = ((z ^ (z >> 30n)) * MUL_1) & MASK_64;
  z = ((z ^ (z >> 27n)) * MUL_2) & MASK_64;
  return z ^ (z >> 31n);
}

/** numpy's PCG64 (128-bit LCG, XSL-RR output): advance, then output from the new state. */
export class PCG64 {
  constructor(state, inc) {
    this.state = state;
    this.inc = inc;
  }

  next() {
    this.state = (this.state * PCG_MULTIPLIER + this.inc) & MASK_128;
    const rot = this.state >> 122n;
    const x = ((this.state >> 64n) ^ this.state) & MASK_64;
    return ((x >> rot) | (x << ((64n - rot) & 63n))) & MASK_64;
  }
}

/** The starting state of row `row`'s stream (stream 0: keep flags; 1: Gaussian noise) for `seed`. */
export function rowState(seed, row, stream = 0) {
  const seedKey = mix(BigInt(seed) & MASK_64);
  const streamKey = mix(BigInt(stream));
  const high = mix((seedKey + BigInt(row + 1) * GOLDEN) & MASK_64);
  const low = mix(high ^ streamKey ^ GOLDEN);
  const increment = mix((low + GOLDEN) & MASK_64);
  return new PCG64((high << 64n) | low, (increment << 1n) | 1n);
}

/** Python's round(): halves to even. */
function roundHalfEven(value) {
  const floor = Math.floor(value);
  const diff = value - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Keep-flag threshold of a drop rate: a 16-bit draw keeps its unit if it is >= this. */
export function threshold(rate) {
  return Math.min(roundHalfEven(rate * LEVELS), LEVELS - 1);
}

export class MaskStream {
  /**
   * @param sites the model's sampled dropout sites, in manifest order: {feed_name, kind, rate, noise_shape}
   * @param seed a BigInt, a decimal string or a safe integer (the server's seeds have up to 63 bits)
   * @param batch rows of the request
   * @param firstRow global position of the first row (batch scoring; 0 for a request)
   */
  constructor(sites, seed, batch, firstRow = 0) {
    const gaussian = sites.filter((s) => (s.kind || "bernoulli") !== "bernoulli");
    if (gaussian.length) {
      throw new Error(
        `Gaussian-dropout sites (${gaussian.map((s) => s.feed_name).join(", ")}) draw numpy's float32 ziggurat ` +
          "normals; this reference covers keep flags only.",
      );
    }
    this.batch = batch;
    this.sites = sites.map((s) => {
      const units = s.noise_shape.reduce((a, b) => a * b, 1);
      return { name: s.feed_name, units, words: Math.ceil(units / 4), threshold: threshold(s.rate) };
    });
    this.rowWords = this.sites.reduce((a, s) => a + s.words, 0);
    this.rows = [];
    for (let row = firstRow; row < firstRow + batch; row++) this.rows.push(rowState(BigInt(seed), row, 0));
  }

  /** Keep flags (1 kept, 0 dropped) for the next `samples` samples, as mc_masked's [T, B, *noise_shape] inputs. */
  next(samples) {
    const feeds = {};
    for (const site of this.sites) feeds[site.name] = new Uint8Array(samples * this.batch * site.units);
    for (let b = 0; b < this.batch; b++) {
      const generator = this.rows[b];
      for (let t = 0; t < samples; t++) {
        for (const site of this.sites) {
          const out = feeds[site.name];
          const base = (t * this.batch + b) * site.units;
          for (let w = 0; w < site.words; w++) {
            let word = generator.next();
            for (let k = 0; k < 4; k++) {
              const unit = w * 4 + k;
              if (unit < site.units) out[base + unit] = Number(word & 0xffffn) >= site.threshold ? 1 : 0;
              word >>= 16n;
            }
          }
        }
      }
    }
    return feeds;
  }
}
