// transformer.py's Transformer, forward pass only, in plain JavaScript: one sentence at a time, float32 weights,
// the same numbers as PyTorch (tests/test_web.py holds the logits and every attention weight to 1e-4).
//
// Shape legend, as in transformer.py, with the batch of one left out of the arrays (the page prints it back in):
//   S source length, T target length, D d_model, H heads (h), d_k = D / H, F d_ff, V vocabulary size
// A tensor here is a Float32Array in row-major order, and the comment beside it says its shape. Sums run in
// JavaScript's float64 and are stored as float32, so the results sit within float32 rounding of PyTorch's.
//
// A classic script: it adds `Model`, `Greedy`, `loadRun`, `translate` and friends to the one global, WebTransformer.
(function (WT) {
  'use strict';

  // -------------------------------------------------------------------------------------------------------------
  // The weights: one base64 string of little-endian arrays, and a list of names, shapes and byte offsets
  // -------------------------------------------------------------------------------------------------------------

  function base64Bytes(text) {
    const binary = atob(text); // one char per byte
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  // IEEE 754 half precision -> float32, for pages exported with --half
  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24; // subnormal
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  function unpackTensors(run) {
    if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('this page needs a little-endian machine');
    const bytes = base64Bytes(run.data);
    const tensors = {};
    for (const t of run.tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (run.dtype === 'float32') {
        tensors[t.name] = new Float32Array(bytes.buffer, t.offset, n); // a view: no copy
      } else if (run.dtype === 'float16') {
        const half = new Uint16Array(bytes.buffer, t.offset, n);
        const full = new Float32Array(n);
        for (let i = 0; i < n; i++) full[i] = halfToFloat(half[i]);
        tensors[t.name] = full;
      } else {
        throw new Error(`weights.js: dtype ${run.dtype} is neither float32 nor float16`);
      }
      tensors[t.name].shape = t.shape;
    }
    for (const [alias, name] of Object.entries(run.aliases || {})) tensors[alias] = tensors[name]; // tied weights
    return tensors;
  }

  // -------------------------------------------------------------------------------------------------------------
  // The pieces, in transformer.py's order
  // -------------------------------------------------------------------------------------------------------------

  // §3.5: PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...), computed in float64 as PyTorch does
  function positionalEncoding(maxLen, D) {
    const pe = new Float32Array(maxLen * D); // (max_len, D)
    for (let pos = 0; pos < maxLen; pos++) {
      for (let twoI = 0; twoI < D; twoI += 2) {
        const angle = pos / 10000 ** (twoI / D);
        pe[pos * D + twoI] = Math.sin(angle);
        pe[pos * D + twoI + 1] = Math.cos(angle);
      }
    }
    return pe;
  }

  // y = x W^T + b, PyTorch's nn.Linear; W is stored (out, in) as PyTorch keeps it, so each output is one dot product
  function linear(x, rows, W, b) {
    const [outF, inF] = W.shape;
    const y = new Float32Array(rows * outF); // (rows, in) -> (rows, out)
    for (let r = 0; r < rows; r++) {
      const xo = r * inF;
      for (let o = 0; o < outF; o++) {
        const wo = o * inF;
        let sum = b ? b[o] : 0;
        for (let k = 0; k < inF; k++) sum += x[xo + k] * W[wo + k];
        y[r * outF + o] = sum;
      }
    }
    return y;
  }

  // §3.1: LayerNorm(x + sublayer), post-LN as the paper; PyTorch's eps 1e-5 and biased variance
  function addAndNorm(x, sub, rows, D, gamma, beta) {
    const out = new Float32Array(rows * D); // (rows, D) + (rows, D) -> (rows, D)
    const sum = new Float64Array(D);
    for (let r = 0; r < rows; r++) {
      let mean = 0;
      for (let d = 0; d < D; d++) {
        sum[d] = Math.fround(x[r * D + d] + sub[r * D + d]); // the residual sum is a float32 tensor in PyTorch
        mean += sum[d];
      }
      mean /= D;
      let variance = 0;
      for (let d = 0; d < D; d++) variance += (sum[d] - mean) ** 2;
      const scale = 1 / Math.sqrt(variance / D + 1e-5);
      for (let d = 0; d < D; d++) out[r * D + d] = (sum[d] - mean) * scale * gamma[d] + beta[d];
    }
    return out;
  }

  // Eq. (2): FFN(x) = max(0, x W_1 + b_1) W_2 + b_2
  function feedForward(x, rows, w) {
    const hidden = linear(x, rows, w.w1, w.b1); // (rows, D) -> (rows, F)
    for (let i = 0; i < hidden.length; i++) if (hidden[i] < 0) hidden[i] = 0;
    return linear(hidden, rows, w.w2, w.b2); // (rows, F) -> (rows, D)
  }

  // §3.2.2 with Eq. (1): q (Tq, D) against keys and values (Tk, D) already projected by W^K and W^V.
  // Head h of a position is its columns h*d_k .. (h+1)*d_k: split_heads's view of the same memory, so no copy.
  // mayAttend(i, j): the boolean mask, True = may attend. A query with no key left attends to nothing
  // (deviation 3 of transformer.py). Returns the heads' outputs merged (Tq, D) and the weights (H, Tq, Tk).
  function attend(q, Tq, K, V, Tk, H, dk, mayAttend) {
    const D = H * dk;
    const out = new Float32Array(Tq * D); // (Tq, D)
    const weights = new Float32Array(H * Tq * Tk); // (H, Tq, Tk)
    const scores = new Float64Array(Tk); // one row of (H, Tq, Tk)
    const scale = 1 / Math.sqrt(dk);
    for (let h = 0; h < H; h++) {
      const col = h * dk;
      for (let i = 0; i < Tq; i++) {
        let max = -Infinity;
        for (let j = 0; j < Tk; j++) {
          if (!mayAttend(i, j)) {
            scores[j] = -Infinity;
            continue;
          }
          let dot = 0;
          for (let d = 0; d < dk; d++) dot += q[i * D + col + d] * K[j * D + col + d]; // q_i . k_j
          scores[j] = Math.fround(dot * scale);
          if (scores[j] > max) max = scores[j];
        }
        const row = (h * Tq + i) * Tk;
        if (max === -Infinity) continue; // every key masked: weights and output stay 0
        let total = 0;
        for (let j = 0; j < Tk; j++) {
          scores[j] = scores[j] === -Infinity ? 0 : Math.exp(scores[j] - max);
          total += scores[j];
        }
        for (let j = 0; j < Tk; j++) weights[row + j] = scores[j] / total; // softmax over the keys
        for (let d = 0; d < dk; d++) {
          let sum = 0;
          for (let j = 0; j < Tk; j++) sum += weights[row + j] * V[j * D + col + d]; // (Tk,) x (Tk, d_k) -> (d_k,)
          out[i * D + col + d] = sum; // merge_heads: head h back into its columns
        }
      }
    }
    return { out, weights };
  }

  // -------------------------------------------------------------------------------------------------------------
  // The model
  // -------------------------------------------------------------------------------------------------------------

  function Model(run) {
    const c = run.config;
    this.config = c;
    this.D = c.d_model;
    this.H = c.n_heads;
    this.dk = c.d_model / c.n_heads;
    this.N = c.n_layers;
    this.V = c.tgt_vocab_size;
    const t = unpackTensors(run);
    const need = (name) => {
      if (!t[name]) throw new Error(`weights.js has no tensor ${name}`);
      return t[name];
    };
    const attention = (p) => ({
      wq: need(`${p}.w_q.weight`), bq: need(`${p}.w_q.bias`),
      wk: need(`${p}.w_k.weight`), bk: need(`${p}.w_k.bias`),
      wv: need(`${p}.w_v.weight`), bv: need(`${p}.w_v.bias`),
      wo: need(`${p}.w_o.weight`), bo: need(`${p}.w_o.bias`),
    });
    const norm = (p) => ({ gamma: need(`${p}.norm.weight`), beta: need(`${p}.norm.bias`) });
    const ffn = (p) => ({
      w1: need(`${p}.w_1.weight`), b1: need(`${p}.w_1.bias`), w2: need(`${p}.w_2.weight`), b2: need(`${p}.w_2.bias`),
    });
    this.srcEmbed = need('src_embed.embedding.weight'); // (V, D)
    this.tgtEmbed = need('tgt_embed.embedding.weight'); // (V, D)
    this.generator = need('generator.weight'); // (V, D): §3.4, the target embedding itself
    this.encoder = [];
    this.decoder = [];
    for (let l = 0; l < this.N; l++) {
      const e = `encoder.layers.${l}`;
      this.encoder.push({ self: attention(`${e}.self_attn`), norm1: norm(`${e}.add_norm_1`), ffn: ffn(`${e}.feed_forward`), norm2: norm(`${e}.add_norm_2`) });
      const d = `decoder.layers.${l}`;
      this.decoder.push({
        self: attention(`${d}.self_attn`), norm1: norm(`${d}.add_norm_1`),
        cross: attention(`${d}.cross_attn`), norm2: norm(`${d}.add_norm_2`),
        ffn: ffn(`${d}.feed_forward`), norm3: norm(`${d}.add_norm_3`),
      });
    }
    this.pe = positionalEncoding(c.max_len, this.D); // (max_len, D)
    this.parameters = run.tensors.reduce((n, x) => n + x.shape.reduce((a, b) => a * b, 1), 0);
  }

  // §3.4, §3.5: ids (L,) at positions start.. -> embedding * sqrt(D) + PE  (L, D)
  Model.prototype.embed = function (table, ids, start) {
    const D = this.D;
    if (start + ids.length > this.config.max_len) throw new Error(`more than max_len=${this.config.max_len} positions`);
    const scale = Math.fround(Math.sqrt(D));
    const x = new Float32Array(ids.length * D); // (L, D)
    ids.forEach((id, i) => {
      if (!(id >= 0 && id < table.shape[0])) throw new Error(`token id ${id} is outside the vocabulary [0, ${table.shape[0]})`);
      for (let d = 0; d < D; d++) {
        x[i * D + d] = Math.fround(table[id * D + d] * scale) + this.pe[(start + i) * D + d];
      }
    });
    return x;
  };

  // §3.1: the encoder. src ids (S,) -> memory (S, D), and each layer's self-attention weights (H, S, S)
  Model.prototype.encode = function (src) {
    const S = src.length;
    const pad = this.config.pad_id;
    const mayAttend = (i, j) => src[j] !== pad; // the padding mask: no query looks at a padding key
    let x = this.embed(this.srcEmbed, src, 0); // (S, D)
    const weights = [];
    for (const layer of this.encoder) {
      const a = layer.self;
      const q = linear(x, S, a.wq, a.bq); // (S, D)
      const k = linear(x, S, a.wk, a.bk); // (S, D)
      const v = linear(x, S, a.wv, a.bv); // (S, D)
      const att = attend(q, S, k, v, S, this.H, this.dk, mayAttend); // (S, D), (H, S, S)
      x = addAndNorm(x, linear(att.out, S, a.wo, a.bo), S, this.D, layer.norm1.gamma, layer.norm1.beta); // (S, D)
      x = addAndNorm(x, feedForward(x, S, layer.ffn), S, this.D, layer.norm2.gamma, layer.norm2.beta); // (S, D)
      weights.push(att.weights);
    }
    return { memory: x, src, weights };
  };

  // The decoder's state for one sentence: each layer's keys and values, the cross-attention's computed once from
  // the memory, the self-attention's growing by one row per token written (bonus stage 14's key/value cache).
  Model.prototype.startDecoder = function (encoded) {
    const S = encoded.src.length;
    const maxT = this.config.max_len;
    const layers = this.decoder.map((layer) => ({
      crossK: linear(encoded.memory, S, layer.cross.wk, layer.cross.bk), // (S, D)
      crossV: linear(encoded.memory, S, layer.cross.wv, layer.cross.bv), // (S, D)
      selfK: new Float32Array(maxT * this.D), // (T so far, D), room for max_len
      selfV: new Float32Array(maxT * this.D), // (T so far, D)
    }));
    return { src: encoded.src, tgt: [], layers };
  };

  // §3.1: the decoder on n new target tokens, positions t..t+n-1 after the t already in the cache.
  // Returns their outputs (n, D) and, per layer, self-attention (H, n, t+n) and cross-attention (H, n, S) weights.
  // One token at a time is greedy decoding; the whole target at once is teacher forcing: the same numbers,
  // because position i only ever sees positions <= i.
  Model.prototype.decodeStep = function (state, ids) {
    const D = this.D;
    const n = ids.length;
    const t = state.tgt.length;
    const S = state.src.length;
    const pad = this.config.pad_id;
    state.tgt.push(...ids);
    const tgt = state.tgt;
    const causal = (i, j) => j <= t + i && tgt[j] !== pad; // §3.2.3: no future position, no padding
    const toSource = (i, j) => state.src[j] !== pad; // the source's padding mask
    let x = this.embed(this.tgtEmbed, ids, t); // (n, D)
    const self = [];
    const cross = [];
    this.decoder.forEach((layer, l) => {
      const cache = state.layers[l];
      const a = layer.self;
      const q = linear(x, n, a.wq, a.bq); // (n, D)
      cache.selfK.set(linear(x, n, a.wk, a.bk), t * D); // keys of the new positions join the cache: (t+n, D)
      cache.selfV.set(linear(x, n, a.wv, a.bv), t * D); // (t+n, D)
      const sa = attend(q, n, cache.selfK, cache.selfV, t + n, this.H, this.dk, causal); // (n, D), (H, n, t+n)
      x = addAndNorm(x, linear(sa.out, n, a.wo, a.bo), n, D, layer.norm1.gamma, layer.norm1.beta); // (n, D)
      const c = layer.cross;
      // queries from the decoder, keys and values from the encoder output
      const cq = linear(x, n, c.wq, c.bq); // (n, D)
      const ca = attend(cq, n, cache.crossK, cache.crossV, S, this.H, this.dk, toSource); // (n, D), (H, n, S)
      x = addAndNorm(x, linear(ca.out, n, c.wo, c.bo), n, D, layer.norm2.gamma, layer.norm2.beta); // (n, D)
      x = addAndNorm(x, feedForward(x, n, layer.ffn), n, D, layer.norm3.gamma, layer.norm3.beta); // (n, D)
      self.push(sa.weights);
      cross.push(ca.weights);
    });
    return { hidden: x, self, cross };
  };

  // §3.4: the pre-softmax projection shares the embedding matrix: hidden (n, D) -> logits (n, V)
  Model.prototype.logits = function (hidden, n) {
    return linear(hidden, n, this.generator, null);
  };

  // Teacher forcing, what model(src, tgt) computes in PyTorch: logits (T, V) and every attention weight.
  Model.prototype.forward = function (src, tgt) {
    const encoded = this.encode(src);
    const state = this.startDecoder(encoded);
    const out = this.decodeStep(state, tgt);
    return { logits: this.logits(out.hidden, tgt.length), encoder: encoded.weights, self: out.self, cross: out.cross };
  };

  // -------------------------------------------------------------------------------------------------------------
  // Translating: translate.py's source_ids, decode_batch (beam 1) and decode, for one sentence
  // -------------------------------------------------------------------------------------------------------------

  const BOS = 1;
  const EOS = 2;

  // the text's pieces and </s>, cut to max_len tokens: {ids, pieces, unknown, cut (how many pieces were dropped)}
  function sourceIds(tokenizer, text, maxLen) {
    const e = tokenizer.encode(text);
    const ids = [...e.ids, EOS];
    const pieces = [...e.pieces, tokenizer.idToPiece(EOS)];
    if (ids.length <= maxLen) return { ids, pieces, unknown: e.unknown, cut: 0 };
    return {
      ids: [...ids.slice(0, maxLen - 1), EOS],
      pieces: [...pieces.slice(0, maxLen - 1), tokenizer.idToPiece(EOS)],
      unknown: e.unknown,
      cut: ids.length - maxLen,
    };
  }

  function argmax(row) {
    let best = 0;
    for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v; // the first of equals, as torch.argmax
    return best;
  }

  // Greedy decoding with the cache, one token per call of next(): bonus stage 14's cached_greedy_decode for one
  // sentence. An answer stops at </s> or after min(max_len - 1, 2 S + 10) tokens, as translate.py's decode_batch.
  function Greedy(model, src) {
    this.model = model;
    this.src = src;
    this.maxSteps = Math.min(model.config.max_len - 1, 2 * src.length + 10);
    this.encoded = model.encode(src);
    this.state = model.startDecoder(this.encoded);
    this.tokens = [BOS]; // the answer so far, <s> first
    this.self = model.decoder.map(() => []); // per layer, per step: (H, 1, t)
    this.cross = model.decoder.map(() => []); // per layer, per step: (H, 1, S)
    this.done = false;
  }

  Greedy.prototype.next = function () {
    if (this.done) return null;
    const last = this.tokens[this.tokens.length - 1];
    const out = this.model.decodeStep(this.state, [last]); // the newest token only: (1, D)
    const logits = this.model.logits(out.hidden, 1); // (1, V)
    const token = argmax(logits);
    this.tokens.push(token);
    out.self.forEach((w, l) => this.self[l].push(w));
    out.cross.forEach((w, l) => this.cross[l].push(w));
    this.done = token === EOS || this.tokens.length - 1 >= this.maxSteps;
    return { token, logits };
  };

  // The answer's tokens after <s>, up to </s>: what translate.py's decode() hands the tokenizer
  Greedy.prototype.answer = function () {
    const out = this.tokens.slice(1);
    const end = out.indexOf(EOS);
    return end < 0 ? out : out.slice(0, end);
  };

  function translate(model, tokenizer, text) {
    const source = sourceIds(tokenizer, text, model.config.max_len);
    const greedy = new Greedy(model, source.ids);
    while (!greedy.done) greedy.next();
    return { text: tokenizer.decode(greedy.answer()), tokens: greedy.tokens, source };
  }

  // weights.js's run -> the model and its tokenizer
  function loadRun(run) {
    if (!run || run.format !== 1) throw new Error('weights.js: not one that translation/web.py wrote (format 1)');
    return { model: new Model(run), tokenizer: new WT.Tokenizer(run.tokenizer) };
  }

  Object.assign(WT, { Model, Greedy, sourceIds, translate, loadRun, argmax, halfToFloat, BOS, EOS });
})((globalThis.WebTransformer = globalThis.WebTransformer || {}));
