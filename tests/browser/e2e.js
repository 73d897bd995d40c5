#!/usr/bin/env node
// Browser end-to-end test of the WHIP/WHEP demo pages, driving Debian's headless Chromium with
// fake camera/microphone through playwright-core:
//   1. /demo/publish.html?name=e2e&autostart=1 publishes (WHIP) and reports "connected";
//   2. /demo/play.html?name=e2e&autostart=1 plays it (WHEP) and reports "playing";
//   3. the player's <video> currentTime advances and getStats() shows decoded video frames;
//   4. both sessions are listed by /rest-api/stream/find_all;
//   5. POST /rest-api/stream/terminate {"name":"e2e","published":false} answers 200 and the
//      player page shows "stopped" while the publisher stays connected;
//   6. the publish page's Stop button (DELETE of its Location) removes the stream.
// Screenshots, page console logs and the offer/answer SDPs go to the output dir; one JSON summary line goes to
// stdout; the exit code is non-zero, with the reason on stderr, on any failure. Every wait is
// bounded and the whole run is capped at RUN_TIMEOUT_MS.
//
// Usage: node e2e.js <server base URL> <output dir> [--name=e2e] [--codec=h264|vp8]
// Setup: bash tests/browser/setup.sh (Debian chromium + npm ci). Env: CHROMIUM (executable,
// default /usr/bin/chromium), E2E_TOKEN (Bearer token for the REST API, if it needs one).
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

const RUN_TIMEOUT_MS = 80_000; // the Rust test kills us at 90 s
const LAUNCH_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 20_000; // page load + getUserMedia + ICE gathering + HTTP + ICE/DTLS
const STOP_TIMEOUT_MS = 15_000;
const GONE_TIMEOUT_MS = 10_000;
const HTTP_TIMEOUT_MS = 10_000;
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  // Chromium leaves loopback interfaces out of ICE gathering by default; with this its offers
  // carry 127.0.0.1 host candidates too (highest priority), so the test also runs where
  // loopback is the only interface, and ICE pairs stay on 127.0.0.1.
  "--allow-loopback-in-peer-connection",
];

function usage(msg) {
  process.stderr.write(`e2e.js: ${msg}\nusage: node e2e.js <base URL> <output dir> [--name=NAME] [--codec=h264|vp8]\n`);
  process.exit(2);
}

const positional = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const flags = Object.fromEntries(
  process.argv.slice(2).filter((a) => a.startsWith("--")).map((a) => {
    const [k, ...v] = a.slice(2).split("=");
    return [k, v.join("=")];
  }),
);
if (positional.length !== 2) usage("expected 2 arguments");
const base = positional[0].replace(/\/+$/, "");
const outDir = path.resolve(positional[1]);
const name = flags.name || "e2e";
const codec = flags.codec || "";
if (!/^https?:\/\//.test(base)) usage(`base URL must start with http:// or https://: ${base}`);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

let chromium;
try {
  ({ chromium } = require("playwright-core"));
} catch (e) {
  process.stderr.write(`e2e.js: playwright-core is not installed (${e.message.split("\n")[0]}); run: bash tests/browser/setup.sh\n`);
  process.exit(1);
}
if (!fs.existsSync(executablePath)) {
  process.stderr.write(`e2e.js: ${executablePath} not found; run: bash tests/browser/setup.sh\n`);
  process.exit(1);
}

const t0 = Date.now();
const ms = () => Date.now() - t0;
const summary = { ok: false, base, name, codec: codec || null, timings: {}, states: {} };
const pages = {}; // label -> playwright Page
const logs = {}; // label -> console lines
let context = null;
let userDataDir = null;
let finishing = false;

function mark(step) {
  summary.timings[step] = ms();
  process.stderr.write(`e2e.js: ${(ms() / 1000).toFixed(1)}s ${step}\n`);
}

class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };
const withTimeout = (p, msEach, what) => Promise.race([
  p,
  new Promise((_, rej) => setTimeout(() => rej(new Failure(`${what}: no result after ${msEach} ms`)), msEach)),
]);

async function api(pathname, body) {
  const headers = { "Content-Type": "application/json" };
  if (process.env.E2E_TOKEN) headers.Authorization = `Bearer ${process.env.E2E_TOKEN}`;
  const resp = await fetch(base + pathname, {
    method: "POST", headers, body: JSON.stringify(body), signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* keep text */ }
  return { status: resp.status, text, json };
}

async function openPage(label, file) {
  const page = await context.newPage();
  pages[label] = page;
  logs[label] = [];
  page.on("console", (m) => logs[label].push(`${ms()}ms console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs[label].push(`${ms()}ms pageerror: ${e.message}`));
  page.on("requestfailed", (r) => logs[label].push(`${ms()}ms requestfailed: ${r.method()} ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on("response", (r) => {
    if (r.status() >= 400) logs[label].push(`${ms()}ms HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
  });
  const q = new URLSearchParams({ name, autostart: "1" });
  if (codec) q.set("codec", codec);
  const url = `${base}/demo/${file}?${q}`;
  const resp = await page.goto(url, { timeout: CONNECT_TIMEOUT_MS });
  if (!resp || resp.status() !== 200) {
    fail(`GET ${url} answered ${resp ? resp.status() : "nothing"}${resp ? ": " + (await resp.text()).slice(0, 300) : ""}`);
  }
  return page;
}

// The page's window.demo state and its #status line.
const pageState = (page) => page.evaluate(() => ({
  state: window.demo && window.demo.state,
  error: window.demo && window.demo.error,
  status: (document.getElementById("status") || {}).textContent,
}));

// Waits until the page's state is one of `states`; fails if it becomes one of `bad` first, or
// on timeout, with the page's own status line.
async function waitState(label, states, bad, timeout) {
  const page = pages[label];
  try {
    await page.waitForFunction(
      ([want]) => window.demo && want.includes(window.demo.state),
      [[...states, ...bad]], { timeout, polling: 100 },
    );
  } catch (e) {
    const s = await pageState(page).catch(() => ({}));
    fail(`${label} page: state ${JSON.stringify(s.state)} after ${timeout} ms, wanted ${states.join("/")} (status: ${s.status})`);
  }
  const s = await pageState(page);
  if (!states.includes(s.state)) fail(`${label} page: ${s.status}`);
  return s;
}

async function inboundVideo(page) {
  return page.evaluate(async () => {
    const pc = window.demo && window.demo.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let out = null;
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        const c = r.codecId && stats.get(r.codecId);
        out = {
          framesDecoded: r.framesDecoded || 0, packetsReceived: r.packetsReceived || 0,
          bytesReceived: r.bytesReceived || 0, frameWidth: r.frameWidth, frameHeight: r.frameHeight,
          codec: c ? c.mimeType : null, packetsLost: r.packetsLost,
        };
      }
    });
    return out;
  });
}

async function outboundVideo(page) {
  return page.evaluate(async () => {
    const pc = window.demo && window.demo.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let out = null;
    stats.forEach((r) => {
      if (r.type === "outbound-rtp" && r.kind === "video") {
        const c = r.codecId && stats.get(r.codecId);
        out = { framesEncoded: r.framesEncoded || 0, packetsSent: r.packetsSent || 0, codec: c ? c.mimeType : null };
      }
    });
    return out;
  });
}

const currentTime = (page) => page.evaluate(() => document.getElementById("video").currentTime);
const sleep = (n) => new Promise((r) => setTimeout(r, n));

async function screenshot(label, file) {
  const page = pages[label];
  if (!page || page.isClosed()) return;
  await withTimeout(page.screenshot({ path: path.join(outDir, file), timeout: 5000 }), 6000, `screenshot ${file}`)
    .catch((e) => process.stderr.write(`e2e.js: screenshot ${file} failed: ${e.message}\n`));
}

// Writes the page's offer and the server's answer to <label>-offer.sdp / <label>-answer.sdp.
async function saveSdp(label) {
  const page = pages[label];
  if (!page || page.isClosed()) return;
  const sdp = await withTimeout(page.evaluate(() => {
    const pc = window.demo && window.demo.pc;
    return pc ? { offer: pc.localDescription && pc.localDescription.sdp, answer: pc.remoteDescription && pc.remoteDescription.sdp } : {};
  }), 3000, "sdp").catch(() => ({}));
  for (const k of ["offer", "answer"]) if (sdp[k]) fs.writeFileSync(path.join(outDir, `${label}-${k}.sdp`), sdp[k]);
}

async function sessions() {
  const r = await api("/rest-api/stream/find_all", {});
  if (r.status !== 200 || !Array.isArray(r.json)) fail(`find_all answered ${r.status}: ${r.text}`);
  return r.json.filter((s) => s.name === name)
    .map((s) => ({ mediaType: s.mediaType, status: s.status, id: s.mediaSessionId }));
}

async function run() {
  fs.mkdirSync(outDir, { recursive: true });
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "e2e-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath, headless: true, args: CHROMIUM_ARGS, timeout: LAUNCH_TIMEOUT_MS,
    viewport: { width: 800, height: 720 }, permissions: ["camera", "microphone"],
    handleSIGTERM: false, handleSIGINT: false, // finish() closes Chromium
  });
  summary.browser = context.browser() ? context.browser().version() : null;
  mark("launched");

  await openPage("publish", "publish.html");
  await waitState("publish", ["connected"], ["error", "stopped"], CONNECT_TIMEOUT_MS);
  mark("publish_connected");
  await saveSdp("publish");

  await openPage("play", "play.html");
  await waitState("play", ["playing"], ["error", "stopped"], CONNECT_TIMEOUT_MS);
  mark("play_playing");
  await saveSdp("play");

  const times = [await currentTime(pages.play)];
  await sleep(1000);
  times.push(await currentTime(pages.play));
  summary.currentTime = times;
  if (!(times[1] > times[0])) fail(`player video is not advancing: currentTime ${times[0]} then ${times[1]} 1 s later`);
  const inbound = await inboundVideo(pages.play);
  summary.inbound = inbound;
  summary.framesDecoded = inbound ? inbound.framesDecoded : 0;
  if (!inbound || !(inbound.framesDecoded > 0)) fail(`player decoded no video frames: ${JSON.stringify(inbound)}`);
  summary.outbound = await outboundVideo(pages.publish);
  mark("video_verified");

  const listed = await sessions();
  summary.sessions = listed;
  if (!listed.some((s) => s.mediaType === "publish")) fail(`find_all lists no publisher of ${name}: ${JSON.stringify(listed)}`);
  if (!listed.some((s) => s.mediaType !== "publish")) fail(`find_all lists no player of ${name}: ${JSON.stringify(listed)}`);

  await screenshot("publish", "publish.png");
  await screenshot("play", "play-playing.png");

  const term = await api("/rest-api/stream/terminate", { name, published: false });
  summary.terminate = { status: term.status, body: term.json || term.text };
  if (term.status !== 200) fail(`POST /rest-api/stream/terminate answered ${term.status}: ${term.text}`);
  mark("terminated");
  const stopped = await waitState("play", ["stopped"], ["error"], STOP_TIMEOUT_MS);
  summary.states.playAfterTerminate = stopped.status;
  mark("play_stopped");
  await screenshot("play", "play-stopped.png");

  const pub = await pageState(pages.publish);
  summary.states.publishAfterTerminate = pub.status;
  if (pub.state !== "connected") fail(`terminating the players also ended the publisher: ${pub.status}`);

  await pages.publish.click("#stop", { timeout: 5000 });
  const pubStopped = await waitState("publish", ["stopped"], ["error"], 5000);
  summary.states.publishAfterStop = pubStopped.status;
  const deadline = Date.now() + GONE_TIMEOUT_MS;
  let left = await sessions();
  while (left.length && Date.now() < deadline) {
    await sleep(200);
    left = await sessions();
  }
  if (left.length) fail(`sessions of ${name} still listed ${GONE_TIMEOUT_MS} ms after DELETE: ${JSON.stringify(left)}`);
  mark("publish_deleted");
  await screenshot("publish", "publish-stopped.png");
  summary.ok = true;
}

async function cleanup() {
  for (const [label, lines] of Object.entries(logs)) {
    try { fs.writeFileSync(path.join(outDir, `${label}-console.log`), lines.join("\n") + "\n"); } catch { /* ignore */ }
  }
  if (context) await withTimeout(context.close(), 10_000, "closing Chromium").catch(() => {});
  // Chromium's helpers may still be writing to the profile just after close: retry, never throw.
  try {
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  } catch (e) {
    process.stderr.write(`e2e.js: could not remove ${userDataDir}: ${e.message}\n`);
  }
}

async function finish(err, quick) {
  if (finishing) return;
  finishing = true;
  summary.totalMs = ms();
  if (err) {
    // Playwright's messages carry a call log with ANSI colours: keep the text.
    summary.error = (err instanceof Error ? err.message : String(err)).replace(/\u001b\[[0-9;]*m/g, "");
    if (!(err instanceof Failure) && err && err.stack) summary.stack = err.stack.split("\n").map((l) => l.trim()).filter((l) => l.startsWith("at ")).slice(0, 3);
  }
  if (err && !quick) {
    for (const label of Object.keys(pages)) {
      summary.states[`${label}AtFailure`] = await withTimeout(pageState(pages[label]), 3000, "state")
        .then((s) => s.status).catch(() => null);
      await screenshot(label, `failure-${label}.png`);
      await saveSdp(label);
    }
  }
  await cleanup();
  process.stdout.write(JSON.stringify(summary) + "\n");
  if (err) {
    process.stderr.write(`e2e.js: FAILED: ${summary.error}\n`);
    for (const [label, lines] of Object.entries(logs)) {
      if (lines.length) process.stderr.write(`--- ${label} page log (last 30 lines)\n${lines.slice(-30).join("\n")}\n`);
    }
    process.stderr.write(`e2e.js: screenshots and logs in ${outDir}\n`);
  } else {
    process.stderr.write(`e2e.js: OK in ${(summary.totalMs / 1000).toFixed(1)} s; screenshots in ${outDir}\n`);
  }
  process.exit(err ? 1 : 0);
}

setTimeout(() => finish(new Failure(`whole run took over ${RUN_TIMEOUT_MS} ms`)), RUN_TIMEOUT_MS);
process.on("SIGTERM", () => finish(new Failure("killed (SIGTERM)"), true));
process.on("SIGINT", () => finish(new Failure("interrupted (SIGINT)"), true));
process.on("exit", (code) => {
  if (!finishing && code === 0) {
    process.stderr.write("e2e.js: FAILED: exited before the test finished\n");
    process.exitCode = 1;
  }
});
run().then(() => finish(null), (e) => finish(e));
