// Loads the example page (examples/browser) in headless Chromium from
// Debian's package and prints what it rendered, for tests/tests/wasm.rs.
//   node chromium.mjs <page URL>
// Prints one JSON line once the page opened, synced and queried the
// replica; then, for every "sync" line on stdin, clicks Sync and prints the
// new result.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [pageUrl] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (message) => logs.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => logs.push(`pageerror: ${error.message}`));
  const settled = async () => {
    try {
      await page.waitForSelector('#result[data-state="done"], #result[data-state="error"]', { timeout: 60_000 });
    } catch (e) {
      throw new Error(`the page did not finish: ${e.message}\n${logs.join('\n')}`);
    }
    const json = await page.getAttribute('#result', 'data-json');
    const cells = await page.$$eval('#result td', (tds) => tds.map((td) => td.textContent));
    process.stdout.write(JSON.stringify({ ...JSON.parse(json), cells }) + '\n');
  };
  await page.goto(pageUrl);
  await settled();
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() !== 'sync') break;
    await page.evaluate(() => { document.querySelector('#result').dataset.state = 'loading'; });
    await page.click('#sync');
    await settled();
  }
} finally {
  await browser.close();
}
