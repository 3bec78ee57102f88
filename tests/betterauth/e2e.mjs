// Open one page in headless Chromium and print what its script recorded.
//
//   node e2e.mjs <page URL>
//
// The page (app.html, served by server.mjs at /app) sets window.__result and then
// window.__done = true; this prints JSON.stringify(window.__result) as one line on
// stdout. The browser's console (where Chromium reports a request blocked by CORS)
// goes to stderr, one message a line. Any failure to launch, load or finish: a
// message on stderr and exit status 1.
//
// Chromium is Debian's (/usr/bin/chromium, or CHROMIUM=path): playwright-core
// downloads no browser, and `npx playwright install` cannot run offline.
import { chromium } from "playwright-core";

const EXECUTABLE = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT_MS = 30_000;

const url = process.argv[2];
if (!url) {
  console.error("usage: node e2e.mjs <page URL>");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: EXECUTABLE,
  headless: true,
  timeout: TIMEOUT_MS,
  // Playwright gives each launch a fresh temporary profile (--user-data-dir). The
  // flags keep Chromium from reaching the internet it does not have, and from a GPU.
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

let status = 0;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on("console", (message) => console.error(`console.${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => console.error(`pageerror: ${error.message}`));

  const response = await page.goto(url);
  if (!response || !response.ok()) {
    throw new Error(`${url} answered ${response ? response.status() : "nothing"}`);
  }
  await page.waitForFunction(() => window.__done === true);
  console.log(JSON.stringify(await page.evaluate(() => window.__result)));
} catch (error) {
  console.error(`e2e failed: ${error.message}`);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
