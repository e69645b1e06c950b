// Run an exported page's JavaScript outside a person's browser, for the tests and the measurements of
// translation/web.py: in Node (the classic scripts in a vm context, as a browser would run them) or in headless
// Chromium (playwright-core from talk/node_modules, the page opened from file://). Reads a JSON request on stdin,
// writes a JSON report on stdout.
//
//   node web_driver.cjs node PAGE_DIR                      < {"jobs": [...]}
//   node web_driver.cjs chromium CHROMIUM PLAYWRIGHT_DIR   < {"visits": [{"url", "jobs", "wait", ...}]}
'use strict';

const fs = require('fs');
const path = require('path');
const vm = require('vm');

// The jobs, the same in both places: they see only the page's one global, WebTransformer.
function runJobs(jobs) {
  const WT = globalThis.WebTransformer;
  let loaded = null;
  const model = () => {
    if (!loaded) loaded = WT.page && WT.page.model ? WT.page : WT.loadRun(WT.run);
    return loaded;
  };
  const tokenizerOf = (job) => (job.tokenizer ? new WT.Tokenizer(job.tokenizer) : model().tokenizer);
  const flat = (arrays) => arrays.map((a) => Array.from(a));
  return jobs.map((job) => {
    try {
      if (job.op === 'forward') {
        const out = model().model.forward(job.src, job.tgt);
        return { logits: Array.from(out.logits), encoder: flat(out.encoder), self: flat(out.self), cross: flat(out.cross) };
      }
      if (job.op === 'encode') {
        const tokenizer = tokenizerOf(job);
        return job.texts.map((text) => tokenizer.encode(text));
      }
      if (job.op === 'decode') {
        const tokenizer = tokenizerOf(job);
        return job.ids.map((ids) => tokenizer.decode(ids));
      }
      if (job.op === 'translate') {
        const { model: m, tokenizer } = model();
        return job.texts.map((text) => {
          const out = WT.translate(m, tokenizer, text);
          return { text: out.text, tokens: out.tokens, source: out.source.ids, cut: out.source.cut };
        });
      }
      if (job.op === 'tokenizer') {
        new WT.Tokenizer(job.tokenizer); // a tokenizer this page must refuse: the error says why
        return { error: null };
      }
      if (job.op === 'time') {
        // ms per token of greedy decoding, the model alone (as the page's #timing), best of job.repeats runs
        const { model: m, tokenizer } = model();
        const ids = WT.sourceIds(tokenizer, job.text, m.config.max_len).ids;
        let best = Infinity;
        let steps = 0;
        let encoderMs = 0;
        for (let r = 0; r < (job.repeats || 3); r++) {
          const t0 = performance.now();
          const greedy = new WT.Greedy(m, ids);
          const t1 = performance.now();
          while (!greedy.done) greedy.next();
          const t2 = performance.now();
          steps = greedy.tokens.length - 1;
          if ((t2 - t1) / steps < best) {
            best = (t2 - t1) / steps;
            encoderMs = t1 - t0;
          }
        }
        return { msPerToken: best, steps, sourceLength: ids.length, encoderMs };
      }
      return { error: `unknown job ${job.op}` };
    } catch (error) {
      return { error: String(error && error.message ? error.message : error) };
    }
  });
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function inNode(pageDir, request) {
  const context = vm.createContext({ atob, console, performance });
  context.globalThis = context;
  for (const name of ['bpe.js', 'transformer.js', 'weights.js']) {
    const file = path.join(pageDir, name);
    if (fs.existsSync(file)) vm.runInContext(fs.readFileSync(file, 'utf8'), context, { filename: file });
  }
  context.jobs = request.jobs;
  return { jobs: vm.runInContext(`(${runJobs.toString()})(jobs)`, context) };
}

// Wait until the page is at rest (ready, or done with the text of a ?src= link), then read what it shows
async function settle(frame, wanted = 'settled') {
  await frame.waitForFunction(
    (w) => {
      const state = document.getElementById('translation').dataset.state;
      if (w === 'done') return state === 'done';
      if (w === 'finished') return state !== 'running';
      return state !== 'running' && (state !== 'idle' || globalThis.WebTransformer.loadMs !== undefined);
    },
    wanted,
    { timeout: 60000 }
  );
  return frame.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    return {
      translation: $('translation').textContent,
      state: $('translation').dataset.state,
      timing: $('timing').textContent,
      msPerToken: $('timing').dataset.msPerToken ? Number($('timing').dataset.msPerToken) : null,
      wallMs: $('timing').dataset.wallMs ? Number($('timing').dataset.wallMs) : null,
      status: $('status').textContent,
      statusKind: $('status').dataset.kind || null,
      sourcePieces: [...$('source-pieces').children].map((el) => ({ text: el.textContent, unk: el.classList.contains('unk'), title: el.title })),
      targetPieces: [...$('target-pieces').children].map((el) => el.textContent),
      shapes: [...$('shape-list').children].map((el) => el.textContent),
      heatCaption: $('heat-caption').textContent,
      source: $('source').value,
      loadMs: globalThis.WebTransformer.loadMs === undefined ? null : globalThis.WebTransformer.loadMs,
    };
  });
}

async function inChromium(executablePath, playwrightDir, request) {
  const { chromium } = require(playwrightDir);
  const browser = await chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const report = { browserVersion: browser.version(), visits: [] };
  try {
    for (const visit of request.visits) {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const seen = { consoleErrors: [], pageErrors: [], external: [] };
      page.on('console', (m) => m.type() === 'error' && seen.consoleErrors.push(m.text()));
      page.on('pageerror', (e) => seen.pageErrors.push(e.message));
      // nothing leaves the machine: a request that is not file:, data: or blob: is recorded and refused
      await page.route('**/*', (route) => {
        const address = route.request().url();
        if (/^(file|data|blob):/.test(address)) return route.continue();
        seen.external.push(address);
        return route.abort('blockedbyclient');
      });
      const t0 = Date.now();
      await page.goto(visit.url, { waitUntil: 'load', timeout: 60000 });
      const gotoMs = Date.now() - t0;
      if (visit.before) await page.evaluate(visit.before);
      let frame = page.mainFrame();
      if (visit.frame) {
        await page.waitForFunction((part) => [...document.querySelectorAll('iframe')].some((f) => f.src.includes(part)), visit.frame, { timeout: 30000 });
        const deadline = Date.now() + 30000;
        for (;;) {
          frame = page.frames().find((f) => f.url().includes(visit.frame));
          if (frame || Date.now() > deadline) break;
          await page.waitForTimeout(50);
        }
        if (!frame) throw new Error(`no frame ${visit.frame}`);
        await frame.waitForLoadState('load');
      }
      // what the page shows once it has settled: after loading, then after each text typed into the box
      const snapshots = [await settle(frame, visit.wait)];
      snapshots[0].settledMs = Date.now() - t0;
      for (const text of visit.type || []) {
        const t1 = Date.now();
        await frame.waitForFunction(() => !document.getElementById('go').disabled, null, { timeout: 30000 });
        await frame.fill('#source', text);
        await frame.press('#source', 'Enter');
        snapshots.push({ ...(await settle(frame, 'finished')), settledMs: Date.now() - t1 });
      }
      const jobs = visit.jobs && visit.jobs.length ? await frame.evaluate(runJobs, visit.jobs) : [];
      if (visit.screenshot) await page.screenshot({ path: visit.screenshot });
      report.visits.push({ url: visit.url, gotoMs, ...snapshots[0], typed: snapshots.slice(1), ...seen, jobs });
      await page.close();
    }
  } finally {
    await browser.close();
  }
  return report;
}

(async () => {
  const [mode, ...rest] = process.argv.slice(2);
  const request = await readStdin();
  let report;
  if (mode === 'node') report = inNode(rest[0], request);
  else if (mode === 'chromium') report = await inChromium(rest[0], rest[1], request);
  else throw new Error('usage: node web_driver.cjs node PAGE_DIR | chromium CHROMIUM PLAYWRIGHT_DIR  (JSON on stdin)');
  process.stdout.write(JSON.stringify(report));
})().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
