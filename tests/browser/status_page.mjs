// Drive the gateway's status page in headless Debian chromium (playwright-core, no bundled
// browser): wait for live numbers, watch them change, take a screenshot, print what was seen
// as one JSON line for the Python test to check against the gateway's own /status.json.
//
//   node tests/browser/status_page.mjs URL SCREENSHOT.png [TIMEOUT_S]
import { chromium } from "playwright-core";

const [url, shot, timeoutArg] = process.argv.slice(2);
const timeoutMs = 1000 * Number(timeoutArg || 30);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({ executablePath, headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url, { waitUntil: "load" });
  const read = () => page.evaluate(() => {
    const t = (id) => document.getElementById(id).textContent;
    const cells = (id) => [...document.querySelectorAll("#" + id + " tbody tr")]
      .filter((tr) => !tr.querySelector("td.none"))
      .map((tr) => [...tr.children].map((td) => td.textContent));
    return {
      gateway: t("gateway-id"), state: t("state"), updated: t("updated"),
      accepted: Number(t("uplinks-accepted")), queue: t("queue-records"), mqtt: t("mqtt-state"),
      forwarders: cells("forwarders"), devices: cells("devices"), modbus: cells("modbus"),
      spark: Number(document.getElementById("spark-uplinks").dataset.points || 0),
      sparkQueue: Number(document.getElementById("spark-queue").dataset.points || 0),
    };
  });
  await page.waitForFunction(() => Number(document.getElementById("uplinks-accepted")
    .textContent) > 0, null, { timeout: timeoutMs });
  const first = await read();
  await page.waitForFunction((n) => Number(document.getElementById("uplinks-accepted")
    .textContent) > n && Number(document.getElementById("spark-uplinks").dataset.points) >= 3,
    first.accepted, { timeout: timeoutMs });
  const later = await read();
  // an alarm the demo raises (its tilted pole) shows up as an open alarm on its device's row
  await page.waitForFunction(() => [...document.querySelectorAll("#devices td.alarm")]
    .some((td) => td.textContent.length > 0), null, { timeout: timeoutMs });
  const alarmed = await read();
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ first, later, alarmed, errors }));
} finally {
  await browser.close();
}
