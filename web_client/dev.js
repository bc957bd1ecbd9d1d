// Development harness for the applicant's page: the real page code (app.js, ui.js,
// display.js, strings.js) driven by a fake server over a fake data channel, with the test
// hook's synthetic camera on a drawn face. No request leaves this folder.
//
// dev.html#state=NAME shows one state; NAME is one of STATES below. Add &rgb=R,G,B for
// the colour state, &reason=CODE for retry, &code=CODE for error, &demo=0 for the
// non-demo wording, &panel=0 to hide the harness panel (screenshots).
import { App } from "./app.js";
import { View } from "./ui.js";
import { CameraError, openCamera } from "./camera.js";
import { installTestHook } from "./testhook.js";

export const STATES = [
  "consent", "consent_ticked", "unsupported", "insecure", "no_session",
  "camera_request", "camera_denied", "camera_none", "camera_in_use", "camera_failed",
  "connecting", "fitting", "fitting_ok", "prepare", "colour", "rest", "scoring",
  "passed", "failed", "retry", "cancelled", "error", "busy", "sequence",
];

const params = new URLSearchParams(location.hash.replace(/^#/, ""));
const state = params.get("state") || "";
const demo = params.get("demo") !== "0" && state !== "no_session";

window.addEventListener("hashchange", () => location.reload());

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- Fakes -------------------------------------------------------------------------

class FakeChannel extends EventTarget {
  constructor() {
    super();
    this.label = "ekyc";
    this.readyState = "connecting";
    this.bufferedAmount = 0;
    this.sentMessages = [];
  }

  open() {
    this.readyState = "open";
    this.dispatchEvent(new Event("open"));
  }

  send(data) {
    const msg = JSON.parse(data);
    this.sentMessages.push(msg);
    this.dispatchEvent(new CustomEvent("page-message", { detail: msg }));
  }

  /** A server → page message. */
  push(msg) {
    this.dispatchEvent(new MessageEvent("message", { data: JSON.stringify(msg) }));
  }

  close() {
    if (this.readyState === "closed") return;
    this.readyState = "closed";
    this.dispatchEvent(new Event("close"));
  }
}

class FakePeerConnection extends EventTarget {
  constructor() {
    super();
    this.connectionState = "connected";
  }

  close() {
    this.connectionState = "closed";
  }
}

/** A drawn face (no photo files in the repository) for the synthetic camera. */
function drawnFace() {
  const c = document.createElement("canvas");
  c.width = 640;
  c.height = 480;
  const g = c.getContext("2d");
  const wall = g.createLinearGradient(0, 0, 640, 480);
  wall.addColorStop(0, "#8a8f96");
  wall.addColorStop(1, "#6d7178");
  g.fillStyle = wall;
  g.fillRect(0, 0, 640, 480);
  g.fillStyle = "#2f4f6f"; // shoulders
  g.beginPath();
  g.ellipse(320, 520, 250, 140, 0, 0, Math.PI * 2);
  g.fill();
  g.fillStyle = "#c99a7e"; // neck
  g.fillRect(285, 300, 70, 110);
  g.fillStyle = "#d9a98c"; // face
  g.beginPath();
  g.ellipse(320, 220, 105, 140, 0, 0, Math.PI * 2);
  g.fill();
  g.fillStyle = "#3a2a20"; // hair
  g.beginPath();
  g.ellipse(320, 130, 112, 70, 0, Math.PI, Math.PI * 2);
  g.fill();
  g.fillStyle = "#f4f1ee"; // eyes
  for (const x of [280, 360]) {
    g.beginPath();
    g.ellipse(x, 205, 17, 9, 0, 0, Math.PI * 2);
    g.fill();
  }
  g.fillStyle = "#3b2b22";
  for (const x of [280, 360]) {
    g.beginPath();
    g.arc(x, 205, 6, 0, Math.PI * 2);
    g.fill();
  }
  g.strokeStyle = "#a8735a"; // nose, mouth
  g.lineWidth = 4;
  g.beginPath();
  g.moveTo(320, 215);
  g.lineTo(310, 262);
  g.lineTo(328, 264);
  g.stroke();
  g.strokeStyle = "#9c4f4a";
  g.beginPath();
  g.arc(320, 280, 30, 0.15 * Math.PI, 0.85 * Math.PI);
  g.stroke();
  return c;
}

// ---- Page markup: the one in index.html ----------------------------------------------

async function loadMarkup() {
  const html = await (await fetch("index.html", { cache: "no-store" })).text();
  const doc = new DOMParser().parseFromString(html, "text/html");
  for (const id of ["app", "flash"]) {
    const el = doc.getElementById(id);
    document.body.appendChild(document.importNode(el, true));
  }
}

// ---- A fake server --------------------------------------------------------------------

/** What the fake server does once the channel opens, per state. */
async function serve(ch, app) {
  const push = (m) => ch.push(m);
  const fit = (code, progress = 0.1) => {
    push({ type: "state", state: "fitting" });
    push({ type: "progress", value: progress });
    push({ type: "guidance", code });
  };
  switch (state) {
    case "connecting":
      return;
    case "fitting":
      return fit(params.get("guidance") || "centre_face");
    case "fitting_ok":
      return fit("ok", 0.25);
    case "prepare":
      fit("ok", 0.3);
      push({ type: "state", state: "challenging" });
      return push({ type: "prepare", in_ms: 3000 });
    case "colour": {
      fit("ok", 0.4);
      push({ type: "state", state: "challenging" });
      const rgb = (params.get("rgb") || "255,0,0").split(",").map((v) => parseInt(v, 10));
      return push({ type: "colour", step: 0, rgb, duration_ms: 600000 });
    }
    case "rest":
      fit("ok", 0.6);
      push({ type: "colour", step: 0, rgb: [0, 0, 255], duration_ms: 300 });
      push({ type: "rest" });
      return push({ type: "progress", value: 0.7 });
    case "scoring":
      fit("ok", 0.8);
      push({ type: "rest" });
      return push({ type: "state", state: "scoring" });
    case "passed":
    case "failed":
      push({ type: "state", state: "done" });
      return push({ type: "outcome", result: state });
    case "retry":
      push({ type: "state", state: "done" });
      return push({ type: "outcome", result: "retry", reason: params.get("reason") || "weak_response" });
    case "cancelled":
      fit("hold_still");
      return app.cancel();
    case "error":
      fit("ok");
      return ch.close(); // connection lost
    case "sequence":
      return sequence(ch);
    default:
      return undefined;
  }
}

/** A whole check, timed like the real service (colour steps 300–450 ms). */
async function sequence(ch) {
  const push = (m) => ch.push(m);
  push({ type: "state", state: "fitting" });
  for (const [code, p] of [["no_face", 0.05], ["move_closer", 0.1], ["centre_face", 0.15], ["hold_still", 0.2], ["ok", 0.25]]) {
    push({ type: "guidance", code });
    push({ type: "progress", value: p });
    await sleep(900);
  }
  push({ type: "state", state: "challenging" });
  push({ type: "prepare", in_ms: 3000 });
  await sleep(3000);
  const palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [255, 255, 0], [0, 255, 255], [255, 0, 255]];
  const steps = 7;
  for (let i = 0; i < steps; i++) {
    const rgb = palette[(Math.random() * palette.length) | 0];
    const d = 300 + ((Math.random() * 150) | 0);
    push({ type: "colour", step: i, rgb, duration_ms: d });
    push({ type: "progress", value: 0.3 + (0.5 * (i + 1)) / steps });
    await sleep(d);
  }
  push({ type: "rest" });
  await sleep(500);
  push({ type: "state", state: "scoring" });
  push({ type: "progress", value: 0.95 });
  await sleep(1500);
  push({ type: "progress", value: 1 });
  push({ type: "state", state: "done" });
  push({ type: "outcome", result: params.get("result") || "passed", reason: params.get("reason") || undefined });
}

// ---- Harness panel -----------------------------------------------------------------------

function panel(hook, channelRef) {
  if (params.get("panel") === "0") return;
  const box = document.createElement("details");
  box.className = "dev-panel";
  box.open = !state;
  const links = STATES.map((s) => `<a href="#state=${s}">${s}</a>`).join(" ");
  box.innerHTML = `<summary>harness</summary><div>${links}</div><pre id="dev-log"></pre>`;
  document.body.appendChild(box);
  const log = box.querySelector("#dev-log");
  setInterval(() => {
    const ch = channelRef.ch;
    const sent = ch ? ch.sentMessages.slice(-4).map((m) => JSON.stringify(m)).join("\n") : "";
    log.textContent = `states: ${hook.states.join(" → ")}\nsent:\n${sent}`;
  }, 500);
}

// ---- Start -----------------------------------------------------------------------------

async function main() {
  await loadMarkup();
  const hook = installTestHook();
  await hook.useSyntheticCamera(drawnFace(), { units: "frame", face: { cx: 320, cy: 220, w: 200, h: 270 } });
  const cameraFailure = {
    camera_denied: "denied", camera_none: "none", camera_in_use: "in_use", camera_failed: "failed",
  }[state];
  const channelRef = { ch: null };
  let app;
  const env = {
    environmentProblem: () => (state === "unsupported" ? "unsupported" : state === "insecure" ? "insecure" : null),
    fetchPageConfig: async () => ({
      demo,
      min_age: 18,
      operator: "Example Operator",
      ice_servers: [],
      media_retention_hours: 2,
      privacy_url: "#privacy",
      contact: "privacy@example.org",
      retry_url: "",
    }),
    credentials: () => (state === "no_session" ? null : { sid: "dev-session", token: "dev-token" }),
    createDemoSession: async () => ({ sid: "dev-session-2", token: "dev-token-2" }),
    openCamera: async () => {
      if (state === "camera_request") return new Promise(() => {}); // the prompt stays up
      if (cameraFailure) throw new CameraError(cameraFailure);
      return openCamera();
    },
    connect: async () => {
      if (state === "busy") {
        const { ApiError } = await import("./signalling.js");
        throw new ApiError("busy", { status: 503, retryAfter: 30 });
      }
      const ch = new FakeChannel();
      channelRef.ch = ch;
      ch.addEventListener("page-message", (ev) => {
        if (ev.detail.type === "hello") serve(ch, app);
      });
      setTimeout(() => ch.open(), 30);
      return { pc: new FakePeerConnection(), channel: ch };
    },
  };
  app = new App({ env, view: new View(document) });
  hook.attach(app);
  window.__ekycDev = { app, hook, channelRef };
  await app.init();
  panel(hook, channelRef);
  if (state === "consent_ticked") {
    document.getElementById("consent-privacy").click();
    document.getElementById("consent-age").click();
    return;
  }
  if (!state || ["consent", "unsupported", "insecure", "no_session"].includes(state)) return;
  document.getElementById("consent-privacy").click();
  document.getElementById("consent-age").click();
  app.start();
}

main().catch((e) => console.error(e));
