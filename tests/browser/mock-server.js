#!/usr/bin/env node
// A stand-in for the media server's HTTP side, to test the demo pages and e2e.js without it:
// serves control/demo/*.html at /demo/, and answers WHIP/WHEP, DELETE <Location>,
// /rest-api/stream/find_all and /rest-api/stream/terminate like the real control server.
// The WebRTC peer is a second headless Chromium ("SFU" page) that answers the publishers'
// offers and forwards their tracks to the players (re-encoded, in the publisher's video codec);
// terminate/DELETE close its peer connection (the player sees DTLS close_notify).
// Candidates are limited to 127.0.0.1 both ways, so ICE stays on loopback.
//
// Usage: node mock-server.js [port]        (prints "listening http://127.0.0.1:PORT")
//        node mock-server.js --self-test   (starts, runs e2e.js against itself, exits with its code)
"use strict";

const http = require("http");
const fs = require("fs");
const os = require("os");
const path = require("path");
const { spawn } = require("child_process");
const { chromium } = require("playwright-core");

const demoDir = path.join(__dirname, "..", "..", "control", "demo");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const sessions = new Map(); // id -> {id, name, kind: "publish"|"play"}
let nextId = 1;
let sfu = null;

// Runs in the SFU page (Playwright sends its source text).
function sfuInit() {
  window.pcs = {};
  window.tracks = {};
  const loopbackOnly = (sdp) => sdp.split("\r\n")
    .filter((l) => !l.startsWith("a=candidate:") || / 127\.0\.0\.1 \d+ typ host/.test(l) && / udp /i.test(l))
    .join("\r\n");
  async function answer(pc, offer) {
    await pc.setRemoteDescription({ type: "offer", sdp: loopbackOnly(offer) });
    return pc;
  }
  async function finish(pc) {
    await pc.setLocalDescription(await pc.createAnswer());
    if (pc.iceGatheringState !== "complete") {
      await new Promise((r) => {
        const t = setTimeout(r, 5000);
        pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") { clearTimeout(t); r(); } });
      });
    }
    return loopbackOnly(pc.localDescription.sdp);
  }
  window.codecs = {};
  // The first video codec of an offer, e.g. "video/H264": what a publisher will send.
  const firstVideoCodec = (sdp) => {
    const m = sdp.match(/^m=video \d+ \S+ (\d+)/m);
    const r = m && sdp.match(new RegExp("^a=rtpmap:" + m[1] + " ([^/]+)/", "m"));
    return r ? "video/" + r[1] : null;
  };
  window.publish = async (id, name, offer) => {
    const pc = window.pcs[id] = new RTCPeerConnection();
    const tracks = window.tracks[name] = {};
    window.codecs[name] = firstVideoCodec(offer);
    pc.addEventListener("track", (e) => { tracks[e.track.kind] = e.track; });
    await answer(pc, offer);
    return finish(pc);
  };
  // Keeps only `mime` (plus its RTX, RED, ULPFEC) in the offer's video section: players get
  // the publisher's codec, like from the real server, which forwards. (setCodecPreferences on
  // the answering side is not enough: Chromium 156 then still sends the offer's first codec.)
  const onlyVideoCodec = (sdp, mime) => {
    const lines = sdp.split("\r\n");
    const name = mime.split("/")[1].toLowerCase();
    const kept = new Set();
    for (const l of lines) {
      const m = l.match(/^a=rtpmap:(\d+) ([^/]+)\//);
      if (m && [name, "red", "ulpfec"].includes(m[2].toLowerCase())) kept.add(m[1]);
    }
    for (const l of lines) {
      const m = l.match(/^a=fmtp:(\d+) apt=(\d+)/);
      if (m && kept.has(m[2])) kept.add(m[1]);
    }
    let video = false;
    return lines.filter((l) => {
      if (l.startsWith("m=")) video = l.startsWith("m=video");
      const m = video && l.match(/^a=(?:rtpmap|fmtp|rtcp-fb):(\d+) /);
      return !m || kept.has(m[1]);
    }).map((l) => {
      if (!l.startsWith("m=video")) return l;
      const f = l.split(" ");
      return [...f.slice(0, 3), ...f.slice(3).filter((pt) => kept.has(pt))].join(" ");
    }).join("\r\n");
  };
  window.play = async (id, name, offer) => {
    const pc = window.pcs[id] = new RTCPeerConnection();
    const want = window.codecs[name];
    await answer(pc, want ? onlyVideoCodec(offer, want) : offer);
    for (const t of pc.getTransceivers()) {
      const track = (window.tracks[name] || {})[t.receiver.track.kind];
      if (track) { await t.sender.replaceTrack(track); t.direction = "sendonly"; }
    }
    return finish(pc);
  };
  window.closeSession = (id) => { if (window.pcs[id]) { window.pcs[id].close(); delete window.pcs[id]; } };
}

function send(res, status, body, headers = {}) {
  const json = typeof body !== "string";
  res.writeHead(status, { "Content-Type": json ? "application/json" : "application/sdp", ...headers });
  res.end(json ? JSON.stringify(body) : body);
}

function end(id) {
  const s = sessions.get(id);
  if (!s) return false;
  sessions.delete(id);
  sfu.evaluate((i) => window.closeSession(i), id).catch(() => {});
  if (s.kind === "publish") for (const p of [...sessions.values()]) if (p.name === s.name) end(p.id);
  return true;
}

async function handle(req, res, body) {
  const url = new URL(req.url, "http://x");
  let m;
  if (req.method === "GET" && (m = url.pathname.match(/^\/demo\/(publish|play)\.html$/))) {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    return res.end(fs.readFileSync(path.join(demoDir, `${m[1]}.html`)));
  }
  if (req.method === "POST" && (m = url.pathname.match(/^\/(whip|whep)\/([^/]+)$/))) {
    const [kind, name] = [m[1] === "whip" ? "publish" : "play", decodeURIComponent(m[2])];
    const published = [...sessions.values()].some((s) => s.name === name && s.kind === "publish");
    if (kind === "publish" && published) return send(res, 409, { error: "Stream name is in use" });
    if (kind === "play" && !published) return send(res, 404, { error: "Stream not found" });
    if (!body.startsWith("v=0")) return send(res, 400, { error: "Bad SDP" });
    const id = `mock-${nextId++}`;
    const answer = await sfu.evaluate(([k, i, n, o]) => window[k](i, n, o), [kind, id, name, body]);
    sessions.set(id, { id, name, kind });
    return send(res, 201, answer, { Location: `/${m[1]}/${m[2]}/${id}` });
  }
  if (req.method === "DELETE" && (m = url.pathname.match(/^\/(whip|whep)\/[^/]+\/([^/]+)$/))) {
    return end(m[2]) ? send(res, 200, { message: "stopped" }) : send(res, 404, { error: "Stream not found" });
  }
  if (req.method === "POST" && url.pathname === "/rest-api/stream/find_all") {
    return send(res, 200, [...sessions.values()].map((s) => ({
      name: s.name, mediaSessionId: s.id, mediaType: s.kind, status: s.kind === "publish" ? "PUBLISHING" : "PLAYING",
    })));
  }
  if (req.method === "POST" && url.pathname === "/rest-api/stream/terminate") {
    const f = JSON.parse(body || "{}");
    const hit = [...sessions.values()].filter((s) => (f.name === undefined || s.name === f.name)
      && (f.published === undefined || (s.kind === "publish") === f.published));
    hit.forEach((s) => end(s.id));
    return hit.length ? send(res, 200, { message: "Stream termination request is received", terminated: hit.map((s) => s.id) })
      : send(res, 404, { error: "Stream not found" });
  }
  send(res, 404, { error: "Not found" });
}

async function main() {
  const selfTest = process.argv[2] === "--self-test";
  const port = selfTest ? 0 : Number(process.argv[2] || 0);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mock-sfu-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath, headless: true, timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"],
  });
  sfu = context.pages()[0] || await context.newPage();
  await sfu.setContent("<title>mock SFU</title>");
  await sfu.evaluate(sfuInit);
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => { body += c; });
    req.on("end", () => handle(req, res, body).catch((e) => send(res, 500, { error: String(e) })));
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  }).catch(async (e) => {
    await context.close().catch(() => {});
    try { fs.rmSync(userDataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }); } catch { /* left in tmp */ }
    throw e;
  });
  const base = `http://127.0.0.1:${server.address().port}`;
  const shutdown = async (code) => {
    server.close();
    await context.close().catch(() => {});
    try { fs.rmSync(userDataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }); } catch { /* left in tmp */ }
    process.exit(code);
  };
  process.on("SIGTERM", () => shutdown(143));
  process.on("SIGINT", () => shutdown(130));
  if (!selfTest) {
    console.log(`listening ${base}`);
    return;
  }
  const out = process.env.E2E_OUT || path.join(os.tmpdir(), "e2e-mock-artifacts");
  const child = spawn(process.execPath, [path.join(__dirname, "e2e.js"), base, out, ...process.argv.slice(3)], { stdio: "inherit" });
  child.on("exit", (code) => shutdown(code === null ? 1 : code));
}

main().catch((e) => { console.error(`mock-server.js: ${e.stack || e}`); process.exit(1); });
