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
