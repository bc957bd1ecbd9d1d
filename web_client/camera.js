// Camera access and the environment checks that come before it.

export const CAMERA_CONSTRAINTS = Object.freeze({
  audio: false,
  video: {
    facingMode: { ideal: "user" },
    width: { ideal: 640 },
    height: { ideal: 480 },
    frameRate: { ideal: 30 },
  },
});

/**
 * What stops this browser from running the check, before asking for anything:
 * "insecure" (not a secure context: no camera API), "unsupported" (no WebRTC or no
 * getUserMedia), or null.
 */
export function environmentProblem() {
  if (typeof window.isSecureContext === "boolean" && !window.isSecureContext) return "insecure";
  if (typeof window.RTCPeerConnection !== "function") return "unsupported";
  if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") {
    return "unsupported";
  }
  return null;
}

export class CameraError extends Error {
  constructor(kind, cause) {
    super(`camera: ${kind}`);
    this.kind = kind; // denied | none | in_use | insecure | unsupported | failed
    this.cause = cause;
  }
}

/** Map a getUserMedia rejection to one of the CameraError kinds. */
export function classifyCameraError(err) {
  const name = (err && err.name) || "";
  switch (name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
      // Chromium also says NotAllowedError when the OS blocks the browser; same advice.
      return "denied";
    case "SecurityError":
      return window.isSecureContext === false ? "insecure" : "denied";
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
    case "ConstraintNotSatisfiedError":
      return "none";
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      // Firefox says AbortError when another application holds the device.
      return "in_use";
    case "TypeError":
      return "unsupported";
    default:
      return "failed";
  }
}

/** Open the user-facing camera. Resolves with a MediaStream; rejects with CameraError. */
export async function openCamera() {
  const problem = environmentProblem();
  if (problem) throw new CameraError(problem);
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(CAMERA_CONSTRAINTS);
  } catch (err) {
    throw new CameraError(classifyCameraError(err), err);
  }
  const track = stream.getVideoTracks()[0];
  if (!track) {
    stream.getTracks().forEach((t) => t.stop());
    throw new CameraError("none");
  }
  return stream;
}

export function stopStream(stream) {
  if (!stream) return;
  for (const track of stream.getTracks()) {
    try {
      track.stop();
    } catch (e) {
      /* already stopped */
    }
  }
}

/** {w, h, fps} of a video track, as far as the browser reports them. */
export function trackCaps(track) {
  const s = (track && track.getSettings && track.getSettings()) || {};
  return {
    w: s.width || null,
    h: s.height || null,
    fps: s.frameRate ? Math.round(s.frameRate * 100) / 100 : null,
  };
}

/** `value` within a capability range {min, max, step}, on its steps. */
function snap(r, value) {
  const v = Math.min(r.max, Math.max(r.min, value));
  return r.step > 0 ? r.min + Math.round((v - r.min) / r.step) * r.step : v;
}

/**
 * The camera's exposure, as far as the browser lets the page set it (Image Capture
 * constraints: `exposureCompensation`, or `exposureMode: "manual"` with `exposureTime`;
 * Chromium-based browsers on most systems, not Safari or Firefox).
 *
 * A camera's own auto-exposure meters the whole frame, so a lit face before a dark room
 * comes out clipped and cannot show the colours' reflection. While the face is fitted the
 * server meters the face and asks for half a stop less or more (docs/protocol.md,
 * `exposure`); just before the colours the page locks the exposure, so that auto-exposure
 * does not dim the face's answer to them. Each call resolves with what happened, which the
 * page reports to the server (`camera`): "adjusted", "at_limit", "locked", "unsupported" or
 * "failed". Nothing here throws.
 */
export class ExposureControl {
  constructor(track) {
    this.track = track || null;
    let caps = {};
    try {
      caps = (track && typeof track.getCapabilities === "function" && track.getCapabilities()) || {};
    } catch (e) {
      caps = {};
    }
    const modes = Array.isArray(caps.exposureMode) ? caps.exposureMode : [];
    const range = (r) => (r && Number.isFinite(r.min) && Number.isFinite(r.max) && r.max > r.min ? r : null);
    this.canLock = modes.includes("manual");
    this.compensation = range(caps.exposureCompensation);
    this.time = this.canLock ? range(caps.exposureTime) : null;
    this.busy = false;
  }

  /** Whether the server's exposure requests can be followed on this camera. */
  get settable() {
    return !!(this.compensation || this.time);
  }

  settings() {
    try {
      return (this.track && this.track.getSettings && this.track.getSettings()) || {};
    } catch (e) {
      return {};
    }
  }

  async apply(constraints) {
    try {
      await this.track.applyConstraints({ advanced: [constraints] });
      return true;
    } catch (e) {
      return false;
    }
  }

  /** `ev` stops (the server's request says how many) darker (dir < 0) or brighter (dir > 0). */
  async step(dir, ev = 0.5) {
    if (!this.settable) return "unsupported";
    if (this.busy) return "failed";
    this.busy = true;
    try {
      const s = this.settings();
      const sign = dir < 0 ? -1 : 1;
      let cur;
      let next;
      let set;
      if (this.compensation) {
        cur = Number.isFinite(s.exposureCompensation) ? s.exposureCompensation : 0;
        next = snap(this.compensation, cur + sign * ev);
        set = { exposureCompensation: next };
      } else {
        const r = this.time;
        cur = Number.isFinite(s.exposureTime) && s.exposureTime > 0 ? s.exposureTime : (r.min + r.max) / 2;
        next = snap(r, cur * Math.pow(2, sign * ev));
        set = { exposureMode: "manual", exposureTime: next };
      }
      if (Math.abs(next - cur) < 1e-9) return "at_limit";
      return (await this.apply(set)) ? "adjusted" : "failed";
    } finally {
      this.busy = false;
    }
  }

  /** Hold the exposure where it is for the colours (null when the camera cannot). */
  async lock() {
    if (!this.canLock) return null;
    if (this.settings().exposureMode === "manual") return "locked";
    return (await this.apply({ exposureMode: "manual" })) ? "locked" : "failed";
  }
}
