// Loads the example page (examples/browser) in headless Chromium from
// Debian's package and prints what it rendered, for tests/tests/wasm.rs.
//   node chromium.mjs <page URL>
// Prints one JSON line once the page opened, synced and queried the
// replica; then, for each line on stdin:
//   sync    clicks Sync and prints the new result;
//   reload  waits for the OPFS cache's writes, reloads the page and prints
//           its first result;
//   damage  flips the last byte of every file of the OPFS cache and prints
//           { damaged: <files> }.
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
    const command = line.trim();
    if (command === 'sync') {
      await page.evaluate(() => { document.querySelector('#result').dataset.state = 'loading'; });
      await page.click('#sync');
      await settled();
    } else if (command === 'reload') {
      await page.evaluate(async () => (await import('./pkg/index.js')).opfsIdle());
      await page.reload();
      await settled();
    } else if (command === 'damage') {
      const damaged = await page.evaluate(async () => {
        const root = await navigator.storage.getDirectory();
        let files = 0;
        const walk = async (dir) => {
          for await (const [name, handle] of dir.entries()) {
            if (handle.kind === 'directory') {
              await walk(handle);
              continue;
            }
            const bytes = new Uint8Array(await (await handle.getFile()).arrayBuffer());
            bytes[bytes.length - 1] ^= 0x01;
            const writable = await handle.createWritable();
            await writable.write(bytes);
            await writable.close();
            files += 1;
          }
        };
        await walk(root);
        return files;
      });
      process.stdout.write(JSON.stringify({ damaged }) + '\n');
    } else {
      break;
    }
  }
} finally {
  await browser.close();
}
