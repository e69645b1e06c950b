import { chromium } from 'playwright-core';
const [url, outdir, ...which] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox','--disable-gpu'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
await page.goto(url + '?transition=none');
await page.waitForFunction(() => window.Reveal && window.Reveal.isReady());
const n = await page.evaluate(() => Reveal.getTotalSlides());
for (let i = 0; i < n; i++) {
  if (which.length && !which.includes(String(i))) continue;
  await page.evaluate((i) => Reveal.slide(i), i);
  await page.waitForTimeout(150);
  await page.screenshot({ path: `${outdir}/s${String(i).padStart(2,'0')}.png` });
}
await browser.close();
