// Hook for automated end-to-end tests. Loaded by main.js only when the page URL has
// ?testhook=1. It installs window.__ekycTest:
//
//   useSyntheticCamera(image, opts) → Promise<info>
//       Replace navigator.mediaDevices.getUserMedia with a canvas.captureStream() of the
//       photo `image` (URL, data URL, Blob, <img>, ImageBitmap or canvas) lit, physically,
//       by the colour the page is showing at that moment:
//         linear_out = albedo · (ambient + k · g(x) · R · screen_linear_rgb)
//       R (`response`, camera channel × screen primary, rows summing to 1) is how skin
//       under a screen primary reaches each camera channel: cameras' and screens' spectra
//       overlap, so a red screen also lifts green a little, more on skin than on grey.
//       albedo = the photo in linear light (sRGB decoded once); g = a smooth dome over the
//       face (centre brighter than the sides) falling to `background` far from it.
//       With `opts.maps` (a URL of 12 little-endian float32 per pixel: ambient RGB, then the
//       RGB that the red, green and blue primaries each add at full power) the frame is
//       instead the scene those light maps describe: linear_out = M0 + M1·R + M2·G + M3·B,
//       R, G, B the screen's colour in linear light (tests/e2e/scenes.py makes such maps
//       from the benchmark's simulator); `image` is then unused and may be null.
//   stopSyntheticCamera(), failCamera(name), screenColour(), consentAndStart(),
//   waitForState(name, ms), waitForOutcome(ms), cameraStats()
//   states, stateLog, received, sent, acks, paints, outcome, error (records)
//
// See docs/page.md for the full description.
import { onPaint, screenColour } from "./display.js";

// ---- sRGB tables ---------------------------------------------------------------------

function srgbDecode(c) {
  return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
}

function srgbEncode(l) {
  return l <= 0.0031308 ? 12.92 * l : 1.055 * Math.pow(l, 1 / 2.4) - 0.055;
}

/** sRGB 8-bit → linear [0, 1]. */
const SRGB_TO_LINEAR = new Float32Array(256);
for (let i = 0; i < 256; i++) SRGB_TO_LINEAR[i] = srgbDecode(i / 255);

/** Linear light quantised to 4096 steps → sRGB 8-bit. */
const LIN_STEPS = 4096;
const LINEAR_TO_SRGB = new Uint8Array(LIN_STEPS);
for (let i = 0; i < LIN_STEPS; i++) {
  LINEAR_TO_SRGB[i] = Math.round(255 * srgbEncode(i / (LIN_STEPS - 1)));
}

const NOISE_LEN = 1 << 16;

function gaussian() {
  let u = 0;
  let v = 0;
  while (u === 0) u = Math.random();
  while (v === 0) v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

async function loadImage(src) {
  if (typeof src === "string") {
    const img = new Image();
    if (!src.startsWith("data:") && !src.startsWith("blob:")) img.crossOrigin = "anonymous";
    img.src = src;
    await img.decode();
    return img;
  }
  if (src instanceof Blob) return createImageBitmap(src);
  if (src && (src.width || src.naturalWidth)) {
    if (src instanceof HTMLImageElement && !src.complete) await src.decode();
    return src;
  }
  throw new TypeError("image must be a URL, Blob, <img>, ImageBitmap or canvas");
}

// ---- Synthetic camera --------------------------------------------------------------

const DEFAULTS = Object.freeze({
  width: 640,
  height: 480,
  fps: 30,
  face: null, // {cx, cy, w, h}; in the photo's pixels (units "photo") or the frame's ("frame")
  units: "photo",
  faceHeight: 0, // with a face in photo units: zoom so the face box is this share of the height (0: no zoom)
  ambient: 0.55, // number or [r, g, b], linear
  k: 0.6, // screen light reaching the face centre, relative to a white screen
  background: 0.05, // share of the screen light that the far background gets
  noise: 1.0, // sensor noise, standard deviation in 8-bit sRGB levels
  mode: "live", // live (3-D dome) | flat (a print filling the view) | static (no response)
  flatLevel: 0.7, // g everywhere in "flat" mode
  delayMs: 0, // extra delay before the light shows on the face (late-response tests)
  mirror: false, // flip the photo left-right
  // the camera's exposure, a gain on the scene's linear light: `gain` is where its own auto-exposure
  // sits; with `control` the track takes exposure constraints as Chromium's do
  // (exposureMode "continuous" | "manual", exposureTime in 100 µs units, the gain
  // proportional to it) and logs what the page set in `exposureLog`
  exposure: { gain: 1, control: false },
  // camera channel × screen primary response of skin, rows normalised to 1: the median over
  // 40 bona fide sessions of benchmarks/simulate.py (spectral skin, screen and camera models)
  response: [
    [0.689, 0.285, 0.016],
    [0.238, 0.549, 0.198],
    [0.016, 0.26, 0.704],
  ],
});

class SyntheticCamera {
  constructor(image, opts, lightMaps = null) {
    this.o = { ...DEFAULTS, ...(opts || {}) };
    this.lightMaps = lightMaps;
    const { width: W, height: H } = this.o;
    this.W = W;
    this.H = H;
    this.canvas = document.createElement("canvas");
    this.canvas.width = W;
    this.canvas.height = H;
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true, alpha: false });
    this.image = image;
    this.history = [{ t: -Infinity, rgb: screenColour() }];
    this.unsubscribe = onPaint((rgb) => {
      this.history.push({ t: performance.now(), rgb });
      if (this.history.length > 512) this.history.splice(0, this.history.length - 256);
    });
    this.stats = { frames: 0, totalMs: 0, maxMs: 0 };
    const ex = { ...DEFAULTS.exposure, ...(this.o.exposure || {}) };
    this.autoGain = Number(ex.gain) > 0 ? Number(ex.gain) : 1;
    this.gain = this.autoGain;
    this.exposureControl = !!ex.control;
    this.exposureLog = [];
    this.running = false;
    this.tracks = new Set();
    this.prepare();
  }

  /** Precompute the linear albedo, the shading map and the noise table once. */
  prepare() {
    const { W, H, o } = this;
    if (this.lightMaps) {
      if (this.lightMaps.length !== W * H * 12) {
        throw new RangeError(`light maps hold ${this.lightMaps.length} floats, expected ${W * H * 12}`);
      }
      this.face = o.face ? { cx: o.face.cx, cy: o.face.cy, rx: 0.6 * o.face.w, ry: 0.6 * o.face.h } : null;
      this.prepareOutput();
      return;
    }
    const img = this.image;
    const iw = img.naturalWidth || img.width;
    const ih = img.naturalHeight || img.height;
    // Cover-fit the photo into W×H: centred, or around the face when its box is given in
    // the photo's pixels (then `faceHeight` may also zoom in so the face box is that share
    // of the frame's height).
    const photoFace = o.face && o.units !== "frame" ? o.face : null;
    let scale = Math.max(W / iw, H / ih);
    if (photoFace && o.faceHeight > 0) scale = Math.max(scale, (o.faceHeight * H) / photoFace.h);
    const dw = iw * scale;
    const dh = ih * scale;
    let dx = (W - dw) / 2;
    let dy = (H - dh) / 2;
    if (photoFace) {
      dx = Math.min(0, Math.max(W - dw, W / 2 - photoFace.cx * scale));
      dy = Math.min(0, Math.max(H - dh, H / 2 - photoFace.cy * scale));
    }
    const ctx = this.ctx;
    ctx.save();
    if (o.mirror) {
      ctx.translate(W, 0);
      ctx.scale(-1, 1);
    }
    ctx.drawImage(img, dx, dy, dw, dh);
    ctx.restore();
    const src = ctx.getImageData(0, 0, W, H).data;
    const n = W * H;
    const albedo = new Float32Array(n * 3);
    for (let i = 0, j = 0, p = 0; i < n; i++, j += 3, p += 4) {
      albedo[j] = SRGB_TO_LINEAR[src[p]];
      albedo[j + 1] = SRGB_TO_LINEAR[src[p + 1]];
      albedo[j + 2] = SRGB_TO_LINEAR[src[p + 2]];
    }
    this.albedo = albedo;

    // Face ellipse in frame pixels.
    let cx;
    let cy;
    let fw;
    let fh;
    if (o.face) {
      const f = o.face;
      if (o.units === "frame") {
        ({ cx, cy } = f);
        fw = f.w;
        fh = f.h;
      } else {
        cx = dx + f.cx * scale;
        cy = dy + f.cy * scale;
        fw = f.w * scale;
        fh = f.h * scale;
      }
      if (o.mirror) cx = W - cx;
    } else {
      cx = W / 2;
      cy = H * 0.46;
      fh = H * 0.6;
      fw = fh * 0.75;
    }
    // The dome spans a little more than the face box (forehead, jaw, ears).
    const rx = 0.6 * fw;
    const ry = 0.6 * fh;
    this.face = { cx, cy, rx, ry };

    const shade = new Float32Array(n);
    const bg = o.background;
    for (let y = 0; y < H; y++) {
      const vy = (y + 0.5 - cy) / ry;
      for (let x = 0; x < W; x++) {
        let g;
        if (o.mode === "flat") {
          g = o.flatLevel;
        } else {
          const vx = (x + 0.5 - cx) / rx;
          const d = vx * vx + vy * vy;
          // Inside: Lambert on an ellipsoid (normal · view = sqrt(1 − d)), edge kept at
          // 0.2 (near-field light still reaches the sides); outside: fast fall-off.
          const f = d < 1 ? 0.2 + 0.8 * Math.sqrt(1 - d) : 0.2 * Math.exp(-(Math.sqrt(d) - 1) / 0.15);
          g = bg + (1 - bg) * f;
        }
        shade[y * W + x] = g;
      }
    }
    this.shade = shade;
    this.prepareOutput();
    const amb = Array.isArray(o.ambient) ? o.ambient : [o.ambient, o.ambient, o.ambient];
    this.ambient = amb.map(Number);
  }

  /** The noise table and the output image (opaque). */
  prepareOutput() {
    const noise = new Float32Array(NOISE_LEN);
    for (let i = 0; i < NOISE_LEN; i++) noise[i] = this.o.noise * gaussian();
    this.noise = noise;
    this.out = this.ctx.createImageData(this.W, this.H);
    const d = this.out.data;
    for (let p = 3; p < d.length; p += 4) d[p] = 255;
  }

  /** The colour the page shows now, or delayMs ago. */
  lightNow(now) {
    if (!(this.o.delayMs > 0)) return screenColour();
    const t = now - this.o.delayMs;
    const h = this.history;
    for (let i = h.length - 1; i >= 0; i--) if (h[i].t <= t) return h[i].rgb;
    return h[0].rgb;
  }

  draw(now) {
    const t0 = performance.now();
    const rgb = this.lightNow(now);
    if (this.lightMaps) this.drawMaps(rgb);
    else this.drawPhoto(rgb);
    this.ctx.putImageData(this.out, 0, 0);
    const ms = performance.now() - t0;
    this.stats.frames += 1;
    this.stats.totalMs += ms;
    if (ms > this.stats.maxMs) this.stats.maxMs = ms;
    this.lastDraw = now;
  }

  /** linear_out = M0 + M1·R + M2·G + M3·B (a static mode shows M0 only). */
  drawMaps(rgb) {
    const on = this.o.mode === "static" ? 0 : 1;
    const r = on * SRGB_TO_LINEAR[rgb[0]];
    const g = on * SRGB_TO_LINEAR[rgb[1]];
    const b = on * SRGB_TO_LINEAR[rgb[2]];
    const M = this.lightMaps;
    const x = this.gain;
    const Z = this.noise;
    const E = LINEAR_TO_SRGB;
    const D = this.out.data;
    const n = this.W * this.H;
    const top = LIN_STEPS - 1;
    let z = (Math.random() * NOISE_LEN) | 0;
    for (let i = 0, m = 0, p = 0; i < n; i++, m += 12, p += 4) {
      for (let c = 0; c < 3; c++) {
        const v = x * (M[m + c] + M[m + 3 + c] * r + M[m + 6 + c] * g + M[m + 9 + c] * b);
        let q = (v * top + 0.5) | 0;
        q = q < 0 ? 0 : q > top ? top : q;
        D[p + c] = E[q] + Z[z++ & 0xffff];
      }
    }
  }

  drawPhoto(rgb) {
    const k = this.o.mode === "static" ? 0 : this.o.k;
    const pr = k * SRGB_TO_LINEAR[rgb[0]];
    const pg = k * SRGB_TO_LINEAR[rgb[1]];
    const pb = k * SRGB_TO_LINEAR[rgb[2]];
    const R = this.o.response;
    const sr = R[0][0] * pr + R[0][1] * pg + R[0][2] * pb;
    const sg = R[1][0] * pr + R[1][1] * pg + R[1][2] * pb;
    const sb = R[2][0] * pr + R[2][1] * pg + R[2][2] * pb;
    const [ar, ag, ab] = this.ambient;
    const A = this.albedo;
    const G = this.shade;
    const Z = this.noise;
    const E = LINEAR_TO_SRGB;
    const D = this.out.data;
    const n = this.W * this.H;
    const top = LIN_STEPS - 1;
    const scale = top * this.gain;
    let z = (Math.random() * NOISE_LEN) | 0;
    for (let i = 0, j = 0, p = 0; i < n; i++, j += 3, p += 4) {
      const s = G[i];
      let q = (A[j] * (ar + s * sr) * scale + 0.5) | 0;
      D[p] = E[q > top ? top : q] + Z[z++ & 0xffff];
      q = (A[j + 1] * (ag + s * sg) * scale + 0.5) | 0;
      D[p + 1] = E[q > top ? top : q] + Z[z++ & 0xffff];
      q = (A[j + 2] * (ab + s * sb) * scale + 0.5) | 0;
      D[p + 2] = E[q > top ? top : q] + Z[z++ & 0xffff];
    }
  }

  start() {
    if (this.running) return;
    this.running = true;
    const interval = 1000 / this.o.fps;
    this.lastDraw = -Infinity;
    const tick = (now) => {
      if (!this.running) return;
      if (now - this.lastDraw >= interval - 2) this.draw(performance.now());
      this.raf = requestAnimationFrame(tick);
    };
    this.raf = requestAnimationFrame(tick);
    // Animation frames stop in hidden tabs; keep the camera going from a timer then.
    this.timer = setInterval(() => {
      const now = performance.now();
      if (now - this.lastDraw >= 2 * interval) this.draw(now);
    }, interval);
    this.draw(performance.now());
  }

  stop() {
    this.running = false;
    cancelAnimationFrame(this.raf);
    clearInterval(this.timer);
    for (const tr of this.tracks) tr.stop();
    this.tracks.clear();
    this.unsubscribe();
  }

  /** A new camera-like stream. */
  stream() {
    this.start();
    const s = this.canvas.captureStream(this.o.fps);
    for (const tr of s.getVideoTracks()) {
      this.tracks.add(tr);
      if (this.exposureControl) this.addExposureApi(tr);
    }
    return s;
  }

  /** Give a canvas track the exposure constraints of a camera (as Chromium reports them). */
  addExposureApi(track) {
    const PER_GAIN = 100; // exposureTime (100 µs units) at the auto-exposure's gain
    const range = { min: 1, max: 2000, step: 1 };
    const state = { exposureMode: "continuous", exposureTime: PER_GAIN };
    const caps = track.getCapabilities ? track.getCapabilities.bind(track) : () => ({});
    const settings = track.getSettings.bind(track);
    track.getCapabilities = () => ({ ...caps(), exposureMode: ["continuous", "manual"], exposureTime: { ...range } });
    track.getSettings = () => ({ ...settings(), ...state });
    track.applyConstraints = async (c) => {
      const set = (c && Array.isArray(c.advanced) && c.advanced[0]) || c || {};
      if (set.exposureMode !== undefined) {
        if (!["continuous", "manual"].includes(set.exposureMode)) {
          throw new DOMException("Unsupported constraint", "OverconstrainedError");
        }
        state.exposureMode = set.exposureMode;
      }
      if (set.exposureTime !== undefined) {
        state.exposureTime = Math.min(range.max, Math.max(range.min, Number(set.exposureTime)));
      }
      this.gain = state.exposureMode === "manual" ? (this.autoGain * state.exposureTime) / PER_GAIN : this.autoGain;
      this.exposureLog.push({ t: performance.now(), ...state, gain: this.gain });
    };
  }
}

// ---- The hook ------------------------------------------------------------------------

export function installTestHook() {
  const md = navigator.mediaDevices;
  const realGetUserMedia = md && md.getUserMedia ? md.getUserMedia.bind(md) : null;
  let camera = null;
  let failure = null;
  const waiters = new Set();

  const hook = {
    version: 1,
    states: [], // every UI state the page entered, in order (names)
    stateLog: [], // [{t, state, detail}]
    received: [], // [{t, msg}] server → page messages
    sent: [], // [{t, msg}] page → server messages
    acks: [], // the ack messages, as sent
    paints: [], // [{t, rgb, kind}] every change of the screen's colour (kind: colour | neutral)
    outcome: null, // {result, reason} once the outcome is known
    error: null, // {state, ...detail} when the page shows an error
    app: null,

    async useSyntheticCamera(image, opts = {}) {
      if (camera) camera.stop();
      let img = null;
      let maps = null;
      if (opts.maps) {
        const resp = await fetch(opts.maps);
        if (!resp.ok) throw new Error(`light maps: HTTP ${resp.status}`);
        maps = new Float32Array(await resp.arrayBuffer());
      } else {
        img = await loadImage(image);
      }
      camera = new SyntheticCamera(img, opts, maps);
      if (md) {
        md.getUserMedia = async (constraints) => {
          if (failure) {
            const name = failure;
            throw new DOMException(`synthetic ${name}`, name);
          }
          if (!constraints || !constraints.video) {
            if (realGetUserMedia) return realGetUserMedia(constraints);
            throw new DOMException("no audio in the synthetic camera", "NotFoundError");
          }
          return camera.stream();
        };
      }
      return { width: camera.W, height: camera.H, fps: camera.o.fps, face: { ...camera.face }, mode: camera.o.mode };
    },

    stopSyntheticCamera() {
      if (camera) camera.stop();
      camera = null;
      if (md && realGetUserMedia) md.getUserMedia = realGetUserMedia;
    },

    /** Make the next getUserMedia calls fail with this DOMException name (null: stop). */
    failCamera(name) {
      failure = name || null;
      if (md && failure && !camera) {
        md.getUserMedia = async (c) => {
          if (failure) throw new DOMException(`synthetic ${failure}`, failure);
          return realGetUserMedia(c);
        };
      }
    },

    screenColour() {
      return screenColour();
    },

    cameraStats() {
      if (!camera) return null;
      const s = camera.stats;
      return {
        frames: s.frames,
        avgDrawMs: s.frames ? s.totalMs / s.frames : 0,
        maxDrawMs: s.maxMs,
        gain: camera.gain,
        exposureLog: camera.exposureLog.slice(),
      };
    },

    /** Tick both boxes and press Start, as a user would (without a real user gesture). */
    consentAndStart() {
      for (const id of ["consent-privacy", "consent-age"]) {
        const box = document.getElementById(id);
        if (box && !box.checked) box.click();
      }
      const start = document.getElementById("start");
      if (!start || start.disabled) return false;
      start.click();
      return true;
    },

    waitForState(name, timeoutMs = 30000) {
      if (hook.states.includes(name)) return Promise.resolve(hook.stateLog.find((s) => s.state === name));
      return new Promise((resolve, reject) => {
        const w = {
          name,
          resolve: (v) => {
            clearTimeout(w.timer);
            waiters.delete(w);
            resolve(v);
          },
        };
        w.timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`state ${name} not reached in ${timeoutMs} ms (states: ${hook.states.join(",")})`));
        }, timeoutMs);
        waiters.add(w);
      });
    },

    async waitForOutcome(timeoutMs = 60000) {
      await hook.waitForState("outcome", timeoutMs);
      return hook.outcome;
    },

    /** Called by main.js with the page's App. */
    attach(app) {
      hook.app = app;
      app.on("state", (state, detail) => {
        const entry = { t: performance.now(), state, detail };
        hook.states.push(state);
        hook.stateLog.push(entry);
        if (state === "outcome") hook.outcome = detail;
        if (["error", "camera_error", "unsupported", "no_session"].includes(state)) {
          hook.error = { state, ...(detail || {}) };
        }
        for (const w of [...waiters]) if (w.name === state) w.resolve(entry);
      });
      app.on("recv", (msg) => hook.received.push({ t: performance.now(), msg }));
      app.on("send", (msg) => hook.sent.push({ t: performance.now(), msg }));
      app.on("ack", (ack) => hook.acks.push(ack));
    },
  };

  onPaint((rgb, kind) => hook.paints.push({ t: performance.now(), rgb, kind }));
  window.__ekycTest = hook;
  return hook;
}
