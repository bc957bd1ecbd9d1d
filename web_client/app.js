// The applicant's page: consent → camera → signalling → face fitting → colour sequence →
// outcome. Protocol: docs/protocol.md. Everything the page shows comes from strings.js.
import { t, lang, setGlobalVars, applyStatic } from "./i18n.js";
import { View } from "./ui.js";
import { attachFlash, paintColour, paintNeutral, afterPaint, validRgb } from "./display.js";
import { ExposureControl, environmentProblem, openCamera, stopStream, trackCaps } from "./camera.js";
import {
  fetchPageConfig, createDemoSession, credentialsFromFragment, connect,
} from "./signalling.js";

const CHANNEL_OPEN_TIMEOUT_MS = 20000;
const DISCONNECT_GRACE_MS = 6000;
// A colour stays up until the next `colour` or `rest`; this only guards against a server
// that went silent mid-sequence, leaving the screen coloured.
const COLOUR_SAFETY_EXTRA_MS = 3000;
const MAX_BUSY_WAIT_S = 120;

/** The real environment: network, camera, URL. dev.html passes fakes instead. */
export function realEnv() {
  return {
    environmentProblem,
    fetchPageConfig,
    createDemoSession,
    credentials: () => credentialsFromFragment(),
    openCamera,
    connect,
  };
}

export class App {
  constructor({ env = realEnv(), view = null } = {}) {
    this.env = env;
    this.view = view || new View(document);
    this.cfg = null;
    this.creds = null;
    this.state = null;
    this.listeners = { state: new Set(), recv: new Set(), send: new Set(), ack: new Set() };
    this.runId = 0;
    this.running = false;
    this.finished = false;
    this.tokenUsed = false;
    this.stream = null;
    this.exposure = null; // ExposureControl of the camera's track
    this.pc = null;
    this.channel = null;
    this.timers = new Map();
    this.wakeLock = null;
    this.outcome = null;
  }

  // ---- Events for the test hook and the dev harness -------------------------------

  /** type: state (name, detail) | recv (msg) | send (msg) | ack (msg). */
  on(type, fn) {
    this.listeners[type].add(fn);
    return () => this.listeners[type].delete(fn);
  }

  emit(type, ...args) {
    for (const fn of this.listeners[type]) {
      try {
        fn(...args);
      } catch (e) {
        console.error(e);
      }
    }
  }

  setState(name, detail = null) {
    if (name === this.state) return;
    this.state = name;
    document.documentElement.dataset.state = name;
    this.emit("state", name, detail);
  }

  // ---- Start-up ------------------------------------------------------------------

  async init() {
    applyStatic(document);
    attachFlash(this.view.el.flash);
    paintNeutral();
    this.view.bindConsent(() => this.start());
    this.view.el.cancel.addEventListener("click", () => this.cancel());
    window.addEventListener("pagehide", () => this.onPageHide());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.running) this.requestWakeLock();
    });

    this.setState("loading");
    this.view.show("loading", { focus: false });

    // Checked before any network call: nothing to ask the service if this cannot work.
    const problem = this.env.environmentProblem();
    if (problem) return this.showUnsupported(problem);

    this.cfg = await this.env.fetchPageConfig();
    setGlobalVars({
      operator: this.cfg.operator || t("operator_unknown"),
      min_age: this.cfg.min_age,
      hours: this.cfg.media_retention_hours,
    });
    this.creds = this.env.credentials();
    if (!this.creds && !this.cfg.demo) {
      this.setState("no_session");
      this.view.message({
        kind: "error",
        title: t("err_no_session_heading"),
        body: t("err_no_session"),
      });
      return;
    }
    this.view.renderConsent(this.cfg);
    this.view.show("consent");
    this.setState("consent");
  }

  showUnsupported(kind) {
    this.setState("unsupported", { kind });
    const k = kind === "insecure" ? "insecure" : "unsupported";
    this.view.message({ kind: "error", title: t(`err_${k}_heading`), body: t(`err_${k}`) });
  }

  /** The Start button (both boxes ticked). Runs inside the click, so full screen works. */
  start() {
    if (this.running) return;
    if (!this.view.consentGiven()) return;
    this.consent = { privacy: true, min_age: true };
    this.enterFullscreen();
    this.run();
  }

  async run() {
    const id = ++this.runId;
    this.running = true;
    this.finished = false;
    this.outcome = null;
    this.view.setProgress(0);
    this.view.setGuidance(null);
    this.requestWakeLock();

    this.setState("camera_request");
    this.view.stage("camera_request");
    let stream;
    try {
      stream = await this.env.openCamera();
    } catch (err) {
      if (id !== this.runId) return;
      return this.cameraError(err.kind || "failed");
    }
    if (id !== this.runId) {
      stopStream(stream);
      return;
    }
    this.stream = stream;
    const track = stream.getVideoTracks()[0];
    this.exposure = new ExposureControl(track);
    track.addEventListener("ended", () => {
      if (id === this.runId && this.running && !this.finished) this.onCameraEnded();
    });
    this.view.attachStream(stream);

    this.setState("connecting");
    this.view.stage("connecting");
    if (!this.creds) {
      try {
        this.creds = await this.env.createDemoSession();
        this.tokenUsed = false;
      } catch (err) {
        if (id !== this.runId) return;
        return this.apiError(err);
      }
      if (id !== this.runId) return;
    }

    let conn;
    try {
      conn = await this.env.connect({
        sid: this.creds.sid,
        token: this.creds.token,
        stream,
        iceServers: this.cfg.ice_servers,
        consent: this.consent,
      });
    } catch (err) {
      if (id !== this.runId) return;
      return this.apiError(err);
    }
    if (id !== this.runId) {
      try {
        conn.pc.close();
      } catch (e) {
        /* ignore */
      }
      return;
    }
    this.tokenUsed = true; // the offer was accepted: this link is spent
    this.pc = conn.pc;
    this.channel = conn.channel;
    this.wire(id, conn.pc, conn.channel);
  }

  wire(id, pc, ch) {
    const live = () => id === this.runId && this.running && !this.finished;
    this.setTimer("open", CHANNEL_OPEN_TIMEOUT_MS, () => {
      if (live()) this.connectionError("connection_failed");
    });
    let opened = false;
    const onOpen = () => {
      if (opened || !live()) return;
      opened = true;
      this.clearTimer("open");
      this.sendHello();
    };
    ch.addEventListener("open", onOpen);
    ch.addEventListener("message", (ev) => {
      if (id === this.runId) this.onRaw(ev.data);
    });
    ch.addEventListener("close", () => {
      if (live()) this.connectionError(opened ? "connection_lost" : "connection_failed");
    });
    pc.addEventListener("connectionstatechange", () => {
      if (!live()) return;
      const s = pc.connectionState;
      if (s === "failed") {
        this.connectionError(opened ? "connection_lost" : "connection_failed");
      } else if (s === "disconnected") {
        this.setTimer("disconnected", DISCONNECT_GRACE_MS, () => {
          if (live() && pc.connectionState !== "connected") this.connectionError("connection_lost");
        });
      } else if (s === "connected") {
        this.clearTimer("disconnected");
      }
    });
    if (ch.readyState === "open") onOpen();
  }

  sendHello() {
    const track = this.stream && this.stream.getVideoTracks()[0];
    const reduced = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    this.send({
      type: "hello",
      caps: {
        screen: { w: screen.width, h: screen.height, dpr: window.devicePixelRatio || 1 },
        camera: { ...trackCaps(track), exposure: !!(this.exposure && this.exposure.settable) },
        reduced_motion: !!reduced,
        touch: (navigator.maxTouchPoints || 0) > 0 || "ontouchstart" in window,
        lang,
      },
      page_time: round2(performance.now()),
    });
  }

  send(msg, ch = this.channel) {
    if (!ch || ch.readyState !== "open") return false;
    try {
      ch.send(JSON.stringify(msg));
    } catch (e) {
      return false;
    }
    this.emit("send", msg);
    return true;
  }

  // ---- Messages from the server ----------------------------------------------------

  onRaw(data) {
    if (typeof data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string") return;
    this.handle(msg);
  }

  /** Handle one server → page message (also the dev harness's entry point). */
  handle(msg) {
    this.emit("recv", msg);
    if (this.finished) return;
    switch (msg.type) {
      case "colour":
        return this.onColour(msg);
      case "rest":
        return this.onRest();
      case "state":
        return this.onServerState(msg.state);
      case "guidance":
        return this.onGuidance(msg.code);
      case "prepare":
        return this.onPrepare(msg.in_ms);
      case "exposure":
        return this.onExposure(msg.step, msg.ev);
      case "progress":
        return this.view.setProgress(msg.value);
      case "outcome":
        return this.onOutcome(msg.result, msg.reason);
      default:
        return undefined;
    }
  }

  onColour(msg) {
    if (!validRgb(msg.rgb)) return;
    const rgb = msg.rgb.slice();
    paintColour(rgb); // first: nothing may delay the colour
    const ch = this.channel;
    afterPaint().then((shownAt) => {
      const ack = { type: "ack", step: msg.step, rgb, shown_at: round2(shownAt) };
      if (this.send(ack, ch)) this.emit("ack", ack);
    });
    this.clearTimer("countdown-end");
    this.view.stopCountdown();
    this.setState("colour");
    const d = Number(msg.duration_ms) > 0 ? Number(msg.duration_ms) : 500;
    this.setTimer("colour", d + COLOUR_SAFETY_EXTRA_MS, () => {
      if (this.state === "colour") paintNeutral();
    });
  }

  onRest() {
    this.clearTimer("colour");
    paintNeutral();
    this.setState("rest");
    this.view.stage("rest");
  }

  onServerState(state) {
    if (state === "fitting") {
      this.enterFitting();
    } else if (state === "scoring") {
      this.clearTimer("colour");
      paintNeutral();
      this.setState("scoring");
      this.view.stage("scoring");
    }
    // "challenging" is followed by `prepare`; "done" by `outcome`.
  }

  enterFitting() {
    if (this.state === "fitting") return;
    this.setState("fitting");
    this.view.stage("fitting");
  }

  onGuidance(code) {
    if (this.state === "connecting") this.enterFitting();
    if (this.state === "fitting" || this.state === "prepare") {
      this.view.setGuidance(code);
    }
  }

  /** The server metered the face: `ev` stops darker (step < 0) or brighter. */
  onExposure(step, ev) {
    const control = this.exposure;
    if (!control || !Number.isFinite(step) || step === 0) return;
    const stops = Number.isFinite(ev) && ev > 0 && ev <= 2 ? ev : 0.5;
    const ch = this.channel;
    control.step(step, stops).then((done) => this.send({ type: "camera", exposure: done }, ch));
  }

  onPrepare(inMs) {
    // the colours must meet a fixed exposure: lock it where the face metering left it
    const control = this.exposure;
    if (control) {
      const ch = this.channel;
      control.lock().then((done) => {
        if (done) this.send({ type: "camera", exposure: done }, ch);
      });
    }
    // Full screen needs a recent click; without one the colour element still covers the
    // whole viewport.
    if (!navigator.userActivation || navigator.userActivation.isActive) this.enterFullscreen();
    this.setState("prepare", { in_ms: inMs });
    this.view.stage("prepare");
    this.view.startCountdown(inMs);
  }

  onOutcome(result, reason) {
    if (!["passed", "failed", "retry"].includes(result)) result = "failed";
    this.outcome = { result, reason: typeof reason === "string" ? reason : null };
    this.teardown();
    this.setState("outcome", this.outcome);
    const v = this.view;
    if (result === "passed") {
      v.message({ kind: "passed", title: t("passed_heading"), body: t("passed_body") });
    } else if (result === "failed") {
      v.message({ kind: "failed", title: t("failed_heading"), body: t("failed_body") });
    } else {
      const key = reason && v.hasText(`reason_${reason}`) ? `reason_${reason}` : "reason_default";
      const again = this.newSessionAction();
      v.message({
        kind: "retry",
        title: t("retry_heading"),
        body: t(key),
        extra: again ? null : t("retry_elsewhere"),
        actions: again ? [again] : [],
      });
    }
  }

  // ---- Leaving, cancelling, failures -----------------------------------------------

  cancel() {
    if (!this.running) return;
    const before = this.tokenUsed;
    this.send({ type: "bye", reason: "user_cancelled" });
    this.teardown({ flush: true });
    this.setState("cancelled");
    const again = before ? this.newSessionAction() : this.sameSessionAction();
    this.view.message({
      kind: "cancelled",
      title: t("cancelled_heading"),
      body: t("cancelled_body"),
      actions: again ? [again] : [],
    });
  }

  onPageHide() {
    if (!this.running) return;
    this.send({ type: "bye", reason: "page_hidden" });
    this.teardown();
  }

  onCameraEnded() {
    this.send({ type: "bye", reason: "camera_ended" });
    this.teardown({ flush: true });
    this.setState("camera_error", { kind: "ended" });
    const again = this.tokenUsed ? this.newSessionAction() : this.sameSessionAction();
    this.view.message({
      kind: "error",
      title: t("err_camera_ended_heading"),
      body: t("err_camera_ended"),
      extra: again ? null : t("retry_elsewhere"),
      actions: again ? [again] : [],
    });
  }

  cameraError(kind) {
    this.teardown();
    if (kind === "insecure" || kind === "unsupported") return this.showUnsupported(kind);
    const k = ["denied", "none", "in_use"].includes(kind) ? kind : "failed";
    this.setState("camera_error", { kind: k });
    this.view.message({
      kind: "error",
      title: t(`err_camera_${k}_heading`),
      body: t(`err_camera_${k}`),
      actions: [this.sameSessionAction()],
    });
  }

  /** A failed HTTP step (demo session or offer). */
  apiError(err) {
    const code = (err && err.code) || "server";
    this.teardown();
    this.setState("error", { code });
    const v = this.view;
    if (code === "busy") {
      const wait = Math.min(MAX_BUSY_WAIT_S, Math.max(0, err.retryAfter == null ? 10 : err.retryAfter));
      const until = performance.now() + wait * 1000;
      const tick = setInterval(() => {
        const left = Math.ceil((until - performance.now()) / 1000);
        if (left > 0 && this.state === "error") {
          v.el.messageBody.textContent = t("err_busy", { seconds: left });
        } else {
          clearInterval(tick);
        }
      }, 1000);
      v.message({
        kind: "error",
        title: t("error_heading"),
        body: wait > 0 ? t("err_busy", { seconds: wait }) : t("err_busy_now"),
        actions: [{
          ...this.sameSessionAction(),
          disabledFor: wait,
          onEnable: () => {
            v.el.messageBody.textContent = t("err_busy_now");
          },
        }],
      });
      return;
    }
    const known = ["bad_sdp", "bad_token", "token_used", "expired", "network", "server",
      "connection_failed", "demo_failed"];
    const key = known.includes(code) ? `err_${code}` : "err_server";
    let action;
    if (["bad_token", "token_used", "expired"].includes(code)) {
      this.tokenUsed = true; // this link cannot be used again
      action = this.newSessionAction();
    } else {
      action = this.sameSessionAction();
    }
    v.message({
      kind: "error",
      title: t("error_heading"),
      body: t(key),
      extra: action ? null : t("retry_elsewhere"),
      actions: action ? [action] : [],
    });
  }

  /** The connection failed or dropped after the offer was accepted. */
  connectionError(code) {
    this.teardown();
    this.setState("error", { code });
    const again = this.newSessionAction();
    this.view.message({
      kind: "error",
      title: t("error_heading"),
      body: t(`err_${code}`),
      extra: again ? null : t("retry_elsewhere"),
      actions: again ? [again] : [],
    });
  }

  /** Try again with the same link (its token was not spent). */
  sameSessionAction() {
    if (this.tokenUsed) return this.newSessionAction();
    return { key: "try_again", primary: true, onClick: () => this.restart(false) };
  }

  /**
   * Try again needs a new session. Demo mode: the page asks for one. Otherwise the relying
   * party must create it: go to the operator's retry_url when configured, else no button.
   */
  newSessionAction() {
    if (this.cfg && this.cfg.demo) {
      return {
        key: "try_again",
        primary: true,
        onClick: () => this.restart(true),
      };
    }
    if (this.cfg && this.cfg.retry_url) {
      const url = this.cfg.retry_url;
      return { key: "try_again", primary: true, onClick: () => location.assign(url) };
    }
    return null;
  }

  /** Run the check again from a Try again click (consent was already given). */
  restart(newSession) {
    if (this.running) return;
    if (newSession) {
      this.creds = null;
      this.tokenUsed = false;
    }
    this.enterFullscreen();
    this.run();
  }

  /** Close the peer connection, stop the camera, neutral screen, leave full screen. */
  teardown({ flush = false } = {}) {
    this.runId += 1; // late callbacks of this run see a different id and stop
    this.running = false;
    this.finished = true;
    for (const k of [...this.timers.keys()]) this.clearTimer(k);
    paintNeutral();
    this.view.stopCountdown();
    const pc = this.pc;
    const ch = this.channel;
    this.pc = null;
    this.channel = null;
    const close = () => {
      try {
        if (ch) ch.close();
      } catch (e) {
        /* ignore */
      }
      try {
        if (pc) pc.close();
      } catch (e) {
        /* ignore */
      }
    };
    if (flush && ch && ch.readyState === "open" && ch.bufferedAmount > 0) {
      setTimeout(close, 300); // let a final `bye` leave
    } else if (flush && ch) {
      setTimeout(close, 50);
    } else {
      close();
    }
    stopStream(this.stream);
    this.stream = null;
    this.exposure = null;
    this.view.detachStream();
    this.releaseWakeLock();
    this.exitFullscreen();
  }

  // ---- Helpers -------------------------------------------------------------------

  setTimer(name, ms, fn) {
    this.clearTimer(name);
    this.timers.set(name, setTimeout(() => {
      this.timers.delete(name);
      fn();
    }, ms));
  }

  clearTimer(name) {
    const h = this.timers.get(name);
    if (h !== undefined) clearTimeout(h);
    this.timers.delete(name);
  }

  enterFullscreen() {
    const el = document.documentElement;
    if (document.fullscreenElement || document.webkitFullscreenElement) return;
    const fn = el.requestFullscreen || el.webkitRequestFullscreen;
    if (!fn) return; // e.g. iPhone Safari: the fixed full-viewport element is the fallback
    try {
      const p = fn.call(el, { navigationUI: "hide" });
      if (p && typeof p.catch === "function") p.catch(() => {});
    } catch (e) {
      /* refused: carry on in the window */
    }
  }

  exitFullscreen() {
    try {
      if (document.fullscreenElement && document.exitFullscreen) {
        const p = document.exitFullscreen();
        if (p && p.catch) p.catch(() => {});
      } else if (document.webkitFullscreenElement && document.webkitExitFullscreen) {
        document.webkitExitFullscreen();
      }
    } catch (e) {
      /* ignore */
    }
  }

  requestWakeLock() {
    if (this.wakeLock || !navigator.wakeLock || !navigator.wakeLock.request) return;
    navigator.wakeLock.request("screen").then((lock) => {
      if (!this.running) {
        lock.release().catch(() => {});
        return;
      }
      this.wakeLock = lock;
      lock.addEventListener("release", () => {
        if (this.wakeLock === lock) this.wakeLock = null;
      });
    }).catch(() => {});
  }

  releaseWakeLock() {
    const lock = this.wakeLock;
    this.wakeLock = null;
    if (lock) lock.release().catch(() => {});
  }
}

function round2(x) {
  return Math.round(x * 100) / 100;
}
