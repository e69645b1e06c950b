// The page: the text box, the translation written token by token, the attention as heat maps, the shapes.
// The model is transformer.js's, the tokenizer bpe.js's, the weights weights.js's; this file only shows them.
// When a translation is complete, #translation holds it with data-state="done" and #timing the ms per token.
(function (WT) {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const page = (WT.page = { runs: 0, model: null, tokenizer: null, last: null });

  const NO_WEIGHTS =
    'This folder holds the page but not the model: weights.js is missing. Build it with `make web` ' +
    '(or `python translate.py export-web RUN_DIR --out DIR`), then reload.';

  function say(text, kind) {
    $('status').textContent = text;
    $('status').dataset.kind = kind || 'info';
  }

  function setState(state, text) {
    const out = $('translation');
    out.dataset.state = state;
    out.textContent = text;
  }

  const shape = (...dims) => `(${dims.join(', ')})`;

  // Give the browser a turn between two tokens: a timer in slow motion, otherwise a message, which unlike
  // setTimeout(0) is not held back to 4 ms once timers nest
  const channel = new MessageChannel();
  const queued = [];
  channel.port1.onmessage = () => queued.shift()();
  function pause(ms) {
    if (ms > 0) return new Promise((resolve) => setTimeout(resolve, ms));
    return new Promise((resolve) => {
      queued.push(resolve);
      channel.port2.postMessage(null);
    });
  }

  // The heat map is redrawn at most once a frame however fast the tokens come (a frame may hold several)
  let drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      drawHeatmap();
    });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Start: read the weights, or say why not
  // -------------------------------------------------------------------------------------------------------------

  function start() {
    if (window.top !== window.self) document.body.classList.add('framed'); // in a slide: the slide has the title
    if (!WT.run) {
      say(NO_WEIGHTS, 'error');
      setState('no-weights', '');
      $('model-info').textContent = 'no model in this folder';
      return;
    }
    try {
      const loaded = WT.loadRun(WT.run);
      page.model = loaded.model;
      page.tokenizer = loaded.tokenizer;
    } catch (error) {
      say(`The weights could not be read: ${error.message}`, 'error');
      setState('error', '');
      return;
    }
    WT.loadMs = performance.now(); // since the page began to load: parsing weights.js and unpacking it included
    const c = page.model.config;
    const megabytes = ((WT.run.data.length * 3) / 4 / 1e6).toFixed(1); // base64: 4 characters for 3 bytes
    $('model-info').textContent =
      `${WT.run.source} · d_model ${c.d_model}, h ${c.n_heads}, N ${c.n_layers}, d_ff ${c.d_ff}, ` +
      `vocabulary ${c.tgt_vocab_size}, post-LN · ${(page.model.parameters / 1e6).toFixed(2)} M parameters ` +
      `(${WT.run.dtype}, ${megabytes} MB) · ready ${Math.round(WT.loadMs)} ms after the page began to load`;
    fillSelect($('layer'), Array.from({ length: c.n_layers }, (_, l) => [l, `layer ${l + 1} of ${c.n_layers}`]), c.n_layers - 1);
    fillSelect($('head'), [['mean', `mean of ${c.n_heads} heads`], ...Array.from({ length: c.n_heads }, (_, h) => [h, `head ${h + 1}`])], 'mean');
    for (const id of ['kind', 'layer', 'head']) $(id).addEventListener('change', () => redrawAttention());
    $('go').disabled = false;
    $('go').addEventListener('click', () => translateBox());
    $('source').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey) {
        event.preventDefault();
        translateBox();
      }
    });
    const canvas = $('heatmap');
    canvas.addEventListener('mousemove', (event) => pointAt(event));
    canvas.addEventListener('mouseleave', () => captionHeatmap());
    const params = new URLSearchParams(location.search);
    $('slow').checked = params.get('slow') === '1';
    if (params.has('src')) {
      $('source').value = params.get('src');
      translateBox();
    }
  }

  function fillSelect(select, options, chosen) {
    select.innerHTML = '';
    for (const [value, label] of options) {
      const option = document.createElement('option');
      option.value = String(value);
      option.textContent = label;
      select.appendChild(option);
    }
    select.value = String(chosen);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Translating, token by token, with a turn for the browser to draw them every frame
  // -------------------------------------------------------------------------------------------------------------

  function chip(piece, className, title) {
    const span = document.createElement('span');
    span.className = `piece ${className || ''}`;
    span.textContent = piece;
    span.dataset.about = title || '';
    span.title = span.dataset.about;
    return span;
  }

  async function translateBox() {
    const run = ++page.runs; // a newer translation ends this one at its next token
    const { model, tokenizer } = page;
    const text = $('source').value;
    $('source-pieces').innerHTML = '';
    $('target-pieces').innerHTML = '';
    $('timing').textContent = '';
    page.last = null;
    if (!text.trim()) {
      say('Nothing to translate: type a German sentence first.', 'warning');
      setState('empty', '');
      drawHeatmap();
      return;
    }
    setState('running', '');
    const source = WT.sourceIds(tokenizer, text, model.config.max_len);
    const notes = [];
    if (source.cut) {
      notes.push(
        `Too long: ${source.ids.length + source.cut} tokens with </s>, and the model reads at most ` +
          `max_len = ${model.config.max_len}; cut to the first ${model.config.max_len - 1} pieces and </s>.`
      );
    }
    if (source.unknown.length) {
      const chars = [...new Set(source.unknown)].map((ch) => JSON.stringify(ch)).join(', ');
      notes.push(`Not in the vocabulary, read as <unk>: ${chars}.`);
    }
    say(notes.join(' '), notes.length ? 'warning' : 'info');
    let unknownAt = 0;
    source.ids.forEach((id, i) => {
      const piece = source.pieces[i];
      if (id === tokenizer.unkId) {
        $('source-pieces').appendChild(chip(piece, 'unk', `${JSON.stringify(source.unknown[unknownAt++])} is not in the vocabulary`));
      } else {
        $('source-pieces').appendChild(chip(piece, tokenizer.special.has(id) ? 'special' : '', `id ${id}`));
      }
    });

    const t0 = performance.now();
    const greedy = new WT.Greedy(model, source.ids); // runs the encoder
    const encoderMs = performance.now() - t0;
    let decoderMs = 0;
    let turn = performance.now();
    page.last = { source, greedy };
    showEncoderShapes(source.ids.length);
    while (!greedy.done) {
      const t1 = performance.now();
      const step = greedy.next();
      decoderMs += performance.now() - t1; // the model's time only, not the drawing nor the waits
      const piece = tokenizer.idToPiece(step.token);
      const target = chip(piece, tokenizer.special.has(step.token) ? 'special' : '', `id ${step.token}`);
      const row = greedy.tokens.length - 2;
      target.addEventListener('mouseenter', () => showCrossRow(row, target));
      $('target-pieces').appendChild(target);
      showCrossRow(row, target);
      showStepShapes(greedy, piece);
      // the browser gets a turn to draw every 16 ms (a frame), or after every token in slow motion
      if ($('slow').checked || performance.now() - turn > 16) {
        await pause($('slow').checked ? 300 : 0);
        if (run !== page.runs) return;
        turn = performance.now();
      }
    }
    drawHeatmap();
    const steps = greedy.tokens.length - 1;
    const perToken = decoderMs / steps;
    setState('done', tokenizer.decode(greedy.answer()));
    const timing = $('timing');
    timing.dataset.msPerToken = perToken.toFixed(3);
    timing.dataset.wallMs = (performance.now() - t0).toFixed(1); // with the drawing and the turns between tokens
    timing.textContent =
      `${steps} tokens in ${decoderMs.toFixed(0)} ms: ${perToken.toFixed(1)} ms per token ` +
      `(encoder ${encoderMs.toFixed(1)} ms), greedy, as translate.py translate --beam 1`;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Attention: the row under the pointer, and any layer and head as a heat map
  // -------------------------------------------------------------------------------------------------------------

  // the chosen layer's attention, one head or their mean: {values (R, C), R, C, rows, cols, what}
  function chosenMatrix() {
    const last = page.last;
    if (!last) return null;
    const { greedy, source } = last;
    const H = page.model.H;
    const kind = $('kind').value;
    const layer = Number($('layer').value);
    const head = $('head').value;
    const written = greedy.tokens.slice(1).map((id) => page.tokenizer.idToPiece(id));
    const inputs = greedy.tokens.slice(0, -1).map((id) => page.tokenizer.idToPiece(id));
    let R;
    let C;
    let rowsOf;
    let rows;
    let cols;
    if (kind === 'encoder') {
      R = C = source.ids.length;
      const w = greedy.encoded.weights[layer]; // (H, S, S)
      rowsOf = (h, i, j) => w[(h * R + i) * C + j];
      rows = cols = source.pieces;
    } else {
      const steps = kind === 'cross' ? greedy.cross[layer] : greedy.self[layer]; // per step: (H, 1, S) or (H, 1, t)
      R = steps.length;
      C = kind === 'cross' ? source.ids.length : R;
      rowsOf = (h, i, j) => {
        const width = steps[i].length / H; // S, or i + 1 keys at step i
        return j < width ? steps[i][h * width + j] : 0; // the future: masked, 0
      };
      rows = written.slice(0, R);
      cols = kind === 'cross' ? source.pieces : inputs.slice(0, R);
    }
    const values = new Float32Array(R * C); // (R, C)
    let max = 0;
    for (let i = 0; i < R; i++) {
      for (let j = 0; j < C; j++) {
        if (head === 'mean') {
          let sum = 0;
          for (let h = 0; h < H; h++) sum += rowsOf(h, i, j);
          values[i * C + j] = sum / H;
        } else {
          values[i * C + j] = rowsOf(Number(head), i, j);
        }
        max = Math.max(max, values[i * C + j]);
      }
    }
    const names = { cross: 'cross-attention', self: 'decoder self-attention', encoder: 'encoder self-attention' };
    const who = head === 'mean' ? `mean of ${H} heads` : `head ${Number(head) + 1}`;
    const what = `${names[kind]}, layer ${layer + 1}, ${who}: weights (1, ${H}, ${R}, ${C})`;
    return { values, R, C, rows, cols, what, max };
  }

  // source pieces shaded by the cross-attention of one written token (the chosen layer and head)
  function showCrossRow(row, target) {
    const last = page.last;
    if (!last) return;
    for (const el of $('target-pieces').children) el.classList.toggle('active', el === target);
    geometry.row = row;
    scheduleDraw();
    const H = page.model.H;
    const weights = last.greedy.cross[Number($('layer').value)][row]; // (H, 1, S)
    const S = weights.length / H;
    const head = $('head').value;
    const values = new Float32Array(S); // (S,): one head's row, or the heads' mean
    for (let j = 0; j < S; j++) {
      if (head !== 'mean') values[j] = weights[Number(head) * S + j];
      else for (let h = 0; h < H; h++) values[j] += weights[h * S + j] / H;
    }
    const max = Math.max(...values);
    const chips = $('source-pieces').children;
    for (let j = 0; j < S; j++) {
      const w = values[j];
      chips[j].style.background = `rgba(0, 114, 178, ${max > 0 ? (0.8 * w) / max : 0})`;
      chips[j].title = `${chips[j].dataset.about} · cross-attention from "${target.textContent}": ${w.toFixed(3)}`;
    }
  }

  const geometry = { left: 0, top: 0, cell: 0, m: null, row: null };

  // another layer, head or kind chosen: the heat map, and the source shaded for the piece last pointed at
  function redrawAttention() {
    const active = $('target-pieces').querySelector('.active');
    if (active && geometry.row !== null) showCrossRow(geometry.row, active);
    drawHeatmap();
  }

  function blue(w) {
    // white (0) to dark blue (1), like matplotlib's Blues
    const t = Math.max(0, Math.min(1, w));
    const mix = (a, b) => Math.round(a + (b - a) * t);
    return `rgb(${mix(247, 8)}, ${mix(251, 48)}, ${mix(255, 107)})`;
  }

  function drawHeatmap() {
    const canvas = $('heatmap');
    const ctx = canvas.getContext('2d');
    const m = chosenMatrix();
    geometry.m = m;
    if (!m || !m.R) {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      $('heat-caption').textContent = '';
      return;
    }
    ctx.font = '12px "DejaVu Sans Mono", monospace';
    const widest = (labels) => Math.max(...labels.map((s) => ctx.measureText(s).width), 10);
    const left = widest(m.rows) + 8;
    const top = widest(m.cols) * 0.9 + 12; // column labels at -63 degrees
    // as big as fits the window below the controls (a slide's frame is short), within 6 to 26 pixels a cell
    const room = Math.max(160, Math.min(420, window.innerHeight - canvas.offsetTop - 40));
    const cell = Math.max(6, Math.min(26, Math.floor(Math.min((560 - left) / m.C, (room - top) / m.R))));
    canvas.width = Math.ceil(left + m.C * cell + 40);
    canvas.height = Math.ceil(top + m.R * cell + 4);
    const size = Math.max(8, Math.min(12, cell)); // labels as tall as a cell, and every few rows when cells are small
    const every = Math.ceil(size / cell);
    ctx.font = `${size}px "DejaVu Sans Mono", monospace`;
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < m.R; i++) {
      for (let j = 0; j < m.C; j++) {
        ctx.fillStyle = blue(m.max > 0 ? m.values[i * m.C + j] / m.max : 0); // as imshow: white 0, darkest the max
        ctx.fillRect(left + j * cell, top + i * cell, cell - 1, cell - 1);
      }
    }
    ctx.fillStyle = '#1d2433';
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    m.rows.forEach((label, i) => i % every === 0 && ctx.fillText(label, left - 4, top + i * cell + cell / 2));
    ctx.textAlign = 'left';
    m.cols.forEach((label, j) => {
      if (j % every) return;
      ctx.save();
      ctx.translate(left + j * cell + cell / 2, top - 4);
      ctx.rotate(-1.1);
      ctx.fillText(label, 0, 0);
      ctx.restore();
    });
    if (geometry.row !== null && geometry.row < m.R && $('kind').value !== 'encoder') {
      ctx.strokeStyle = '#d55e00'; // the row of the written piece under the pointer
      ctx.lineWidth = 2;
      ctx.strokeRect(left - 1, top + geometry.row * cell - 1, m.C * cell + 1, cell + 1);
    }
    Object.assign(geometry, { left, top, cell });
    captionHeatmap();
  }

  function captionHeatmap(extra) {
    const m = geometry.m;
    const kind = $('kind').value;
    const axes =
      kind === 'encoder'
        ? 'rows: source pieces (queries), columns: source pieces (keys)'
        : kind === 'cross'
          ? 'rows: the piece written at that step (queries), columns: source pieces (keys)'
          : 'rows: the piece written at that step (queries), columns: the decoder input so far (keys; the future is masked)';
    const scale = m ? ` Darkest: ${m.max.toFixed(2)}.` : '';
    $('heat-caption').textContent = m ? `${m.what}. ${axes}.${scale}${extra ? ' ' + extra : ''}` : '';
  }

  function pointAt(event) {
    const { m, left, top, cell } = geometry;
    if (!m) return;
    const box = event.target.getBoundingClientRect();
    const x = ((event.clientX - box.left) * event.target.width) / box.width;
    const y = ((event.clientY - box.top) * event.target.height) / box.height;
    const i = Math.floor((y - top) / cell);
    const j = Math.floor((x - left) / cell);
    if (i >= 0 && i < m.R && j >= 0 && j < m.C) {
      captionHeatmap(`"${m.rows[i]}" → "${m.cols[j]}": ${m.values[i * m.C + j].toFixed(3)}`);
    } else {
      captionHeatmap();
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Shapes: what each step computes, with the batch of one put back in, as transformer.py's comments write them
  // -------------------------------------------------------------------------------------------------------------

  function showEncoderShapes(S) {
    const { D, H, dk, N } = page.model;
    const F = page.model.config.d_ff;
    const V = page.model.V;
    const lines = [
      `source ids ${shape(1, S)}`,
      `embedding × √d_model + PE ${shape(1, S, D)}`,
      `encoder × ${N}: Q, K, V ${shape(1, H, S, dk)} each → weights ${shape(1, H, S, S)} → heads merged ${shape(1, S, D)} → FFN ${shape(1, S, F)} → ${shape(1, S, D)}`,
      `memory ${shape(1, S, D)} → cross-attention K, V ${shape(1, H, S, dk)} per layer, once`,
      `each step: logits = hidden · embeddingᵀ ${shape(1, D)} × ${shape(D, V)} → ${shape(1, V)}`,
    ];
    const list = $('shape-list');
    list.innerHTML = '';
    for (const text of lines) {
      const li = document.createElement('li');
      li.textContent = text;
      list.appendChild(li);
    }
    const step = document.createElement('li');
    step.className = 'step';
    list.appendChild(step);
  }

  function showStepShapes(greedy, piece) {
    const { D, H, dk } = page.model;
    const t = greedy.tokens.length - 1; // keys in the cache after this step
    const S = greedy.src.length;
    $('shape-list').lastChild.textContent =
      `step ${t}: token ${shape(1, 1)} → embedding + PE at position ${t - 1} ${shape(1, 1, D)} → ` +
      `self-attention q ${shape(1, H, 1, dk)} · K cacheᵀ ${shape(1, H, dk, t)} → ${shape(1, H, 1, t)} → ` +
      `cross-attention ${shape(1, H, 1, S)} → hidden ${shape(1, 1, D)} → logits ${shape(1, page.model.V)} → argmax "${piece}"`;
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})((globalThis.WebTransformer = globalThis.WebTransformer || {}));
