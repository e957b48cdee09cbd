// Drives the broker's dashboard in headless Chromium for client/tests/http_dashboard.rs.
// Usage: node drive.js URL TOPIC GROUP SCREENSHOT_PATH
// Prints one JSON line with what the page showed and what resending the DLQ did.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

async function main() {
  const [url, topic, group, screenshot] = process.argv.slice(2);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "ferromq-chromium-"));
  // A fresh profile directory (Chromium's --user-data-dir) for every run.
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 1100 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url, { waitUntil: "load" });
    await page.waitForSelector(`body[data-loaded="true"]`, { timeout: 15000 });
    await page.waitForSelector(`#topics tr[data-topic="${topic}"]`, { timeout: 15000 });
    await page.waitForSelector(`#groups tr[data-group="${group}"]`, { timeout: 15000 });
    // Four polls: the charts have three rates to draw.
    await page.waitForFunction(() => Number(document.body.dataset.samples) >= 4, null, { timeout: 20000 });
    const topicRow = page.locator(`#topics tr[data-topic="${topic}"]`);
    const groupRow = page.locator(`#groups tr[data-group="${group}"]`);
    const result = {
      topic_messages: Number(await topicRow.locator(".messages").innerText()),
      topic_queues: Number(await topicRow.locator(".queues").innerText()),
      group_lag: Number(await groupRow.locator(".lag").innerText()),
      group_dlq: Number(await groupRow.locator(".dlq").innerText()),
      first_group: await page.locator("#groups tbody tr").first().getAttribute("data-group"),
    };
    await groupRow.click();
    const button = page.locator(`button[data-resend="${group}"]`);
    await button.waitFor({ timeout: 15000 });
    await page.screenshot({ path: screenshot, fullPage: true });
    await button.click();
    await page.waitForSelector("body[data-last-resend]", { timeout: 15000 });
    result.resent = Number(await page.evaluate(() => document.body.dataset.lastResend));
    result.errors = errors;
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
