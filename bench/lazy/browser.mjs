// Loads bench/lazy/page.html in headless Chromium (Debian's, driven by
// playwright-core from edge-wasm/js), once per URL argument, each in a
// fresh context (a cold cache), and prints the page's JSON result per line.
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const require = createRequire(resolve(process.env.EDGE_WASM_JS, 'package.json'));
const { chromium } = require('playwright-core');
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  for (const url of process.argv.slice(2)) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(url);
    await page.waitForSelector('body[data-json]', { state: 'attached', timeout: 120_000 });
    process.stdout.write((await page.getAttribute('body', 'data-json')) + '\n');
    await context.close();
  }
} finally {
  await browser.close();
}
