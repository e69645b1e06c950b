// Open the static deck in headless Chromium and report, as JSON on stdout, what a person would notice:
// how many slides reveal.js made, which carry speaker notes, whether every image loaded, console errors,
// failed requests, and any request that tried to leave the machine (those are blocked, and reported).
// It also writes a screenshot of the title slide.
//
//   node check_deck.mjs URL SCREENSHOT.png [CHROMIUM]      (build_slides.py's `verify` and the tests run it)
import { chromium } from 'playwright-core';

const [url, screenshot, executablePath = '/usr/bin/chromium'] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error('usage: node check_deck.mjs URL SCREENSHOT.png [CHROMIUM]');
  process.exit(2);
}

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
const isLocal = (address) => {
  const { protocol, hostname } = new URL(address);
  return ['data:', 'blob:', 'file:'].includes(protocol) || LOCAL_HOSTS.has(hostname);
};

const browser = await chromium.launch({
  executablePath,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync'
  ]
});
const report = {
  browserVersion: browser.version(),
  consoleErrors: [],
  failedRequests: [],
  externalRequests: [],
  requests: 0
};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  page.on('console', (message) => {
    if (message.type() === 'error') report.consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => report.consoleErrors.push(`uncaught: ${error.message}`));
  page.on('requestfailed', (request) => {
    if (isLocal(request.url())) report.failedRequests.push(`${request.url()}: ${request.failure()?.errorText}`);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) report.failedRequests.push(`${response.url()}: HTTP ${response.status()}`);
  });
  // nothing leaves the machine: a request to another host is recorded and aborted
  await page.route('**/*', (route) => {
    report.requests += 1;
    const address = route.request().url();
    if (isLocal(address)) return route.continue();
    report.externalRequests.push(address);
    return route.abort('blockedbyclient');
  });

  await page.goto(url, { waitUntil: 'load', timeout: 30000 });
  await page.waitForFunction(() => window.Reveal && window.Reveal.isReady(), null, { timeout: 30000 });
  // every image, on every slide, has finished loading (or failing)
  await page.waitForFunction(() => [...document.images].every((image) => image.complete), null, { timeout: 30000 });

  Object.assign(
    report,
    await page.evaluate(() => {
      const slides = window.Reveal.getSlides();
      return {
        title: document.title,
        totalSlides: window.Reveal.getTotalSlides(),
        slidesWithNotes: slides.filter((slide) => (slide.querySelector('aside.notes')?.textContent || '').trim())
          .length,
        slideTitles: slides.map((slide) => slide.querySelector('h1, h2, h3')?.textContent.trim() || ''),
        images: [...document.images].map((image) => ({
          src: image.getAttribute('src'),
          naturalWidth: image.naturalWidth,
          naturalHeight: image.naturalHeight
        })),
        // the text of every code block as the audience sees it (after markdown and highlighting)
        codeBlocks: [...document.querySelectorAll('.reveal pre code')].map((code) => code.textContent)
      };
    })
  );
  await page.evaluate(() => window.Reveal.slide(0));
  await page.waitForTimeout(200);
  await page.screenshot({ path: screenshot });
  report.screenshot = screenshot;
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
