// HTTP calls to the service and the WebRTC offer/answer exchange (docs/protocol.md).

const DEFAULT_CONFIG = Object.freeze({
  demo: false,
  min_age: 18,
  operator: "",
  ice_servers: [],
  media_retention_hours: 2,
  privacy_url: "",
  contact: "",
  retry_url: "",
});

const ICE_GATHER_TIMEOUT_MS = 3000;
const HTTP_TIMEOUT_MS = 15000;

/** Where the API lives: <meta name="ekyc-api-base" content="https://…"> or this origin. */
export function apiBase() {
  const meta = document.querySelector('meta[name="ekyc-api-base"]');
  const v = (meta && meta.content) || "";
  return v.replace(/\/+$/, "");
}

export class ApiError extends Error {
  /**
   * code: bad_sdp | bad_token | token_used | expired | busy | network | server |
   * connection_failed | demo_failed (or another code the server sent)
   */
  constructor(code, { status = 0, message = "", retryAfter = null } = {}) {
    super(message || code);
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function codeFromStatus(status) {
  if (status === 400) return "bad_sdp";
  if (status === 401 || status === 403 || status === 404) return "bad_token";
  if (status === 409) return "token_used";
  if (status === 410) return "expired";
  if (status === 429 || status === 503) return "busy";
  return "server";
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date); null if absent. */
export function parseRetryAfter(value) {
  if (!value) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return parseInt(v, 10);
  const when = Date.parse(v);
  if (!Number.isNaN(when)) return Math.max(0, Math.ceil((when - Date.now()) / 1000));
  return null;
}

async function request(path, { method = "GET", headers = {}, body } = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), HTTP_TIMEOUT_MS);
  let res;
  try {
    res = await fetch(apiBase() + path, {
      method,
      headers: body !== undefined ? { "Content-Type": "application/json", ...headers } : headers,
      body: body !== undefined ? JSON.stringify(body) : undefined,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
      signal: ctl.signal,
    });
  } catch (err) {
    throw new ApiError("network", { message: String(err && err.message) });
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(err.code || codeFromStatus(res.status), {
      status: res.status,
      message: err.message || res.statusText,
      retryAfter: parseRetryAfter(res.headers.get("Retry-After")),
    });
  }
  return data;
}

/**
 * GET /v1/page-config → {demo, min_age, operator, ice_servers, …}. Missing fields take
 * defaults; a failed request gives the defaults (not demo, 18, no ICE servers).
 */
export async function fetchPageConfig() {
  let data = {};
  try {
    data = (await request("/v1/page-config")) || {};
  } catch (e) {
    console.warn("page-config unavailable; using defaults", e.code || e);
  }
  const cfg = { ...DEFAULT_CONFIG };
  if (typeof data.demo === "boolean") cfg.demo = data.demo;
  if (Number.isInteger(data.min_age) && data.min_age > 0 && data.min_age < 150) cfg.min_age = data.min_age;
  if (typeof data.operator === "string") cfg.operator = data.operator.trim();
  if (Array.isArray(data.ice_servers)) {
    cfg.ice_servers = data.ice_servers.filter((s) => s && (typeof s.urls === "string" || Array.isArray(s.urls)));
  }
  if (typeof data.media_retention_hours === "number" && data.media_retention_hours > 0) {
    cfg.media_retention_hours = data.media_retention_hours;
  }
  for (const k of ["privacy_url", "retry_url"]) {
    if (typeof data[k] === "string" && /^(https?:\/\/|\/)/i.test(data[k])) cfg[k] = data[k];
  }
  if (typeof data.contact === "string") cfg.contact = data.contact.trim();
  return cfg;
}

/** POST /demo/session (demo mode only) → {sid, token, expiresAt, pageUrl}. */
export async function createDemoSession() {
  let data;
  try {
    data = await request("/demo/session", { method: "POST", body: {} });
  } catch (e) {
    if (e.code === "busy") throw e;
    throw new ApiError("demo_failed", { status: e.status, message: e.message });
  }
  if (!data || typeof data.session_id !== "string" || typeof data.client_token !== "string") {
    throw new ApiError("demo_failed", { message: "bad /demo/session answer" });
  }
  return {
    sid: data.session_id,
    token: data.client_token,
    expiresAt: data.expires_at || null,
    pageUrl: data.page_url || null,
  };
}

/** Session id and client token from the URL fragment (#sid=…&token=…), never the query. */
export function credentialsFromFragment(hash = location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const sid = params.get("sid");
  const token = params.get("token");
  if (sid && token) return { sid, token };
  return null;
}

function waitIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (complete) => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      resolve(complete);
    };
    const onChange = () => {
      if (pc.iceGatheringState === "complete") done(true);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    pc.addEventListener("icegatheringstatechange", onChange);
  });
}

/**
 * Build the peer connection (one sendonly video track, data channel "ekyc"), gather ICE,
 * post the offer and apply the answer. Resolves with {pc, channel}; on failure closes
 * what it made and rejects with ApiError.
 */
export async function connect({ sid, token, stream, iceServers = [], consent }) {
  const pc = new RTCPeerConnection({ iceServers });
  try {
    const track = stream.getVideoTracks()[0];
    pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    const channel = pc.createDataChannel("ekyc", { ordered: true });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
    const local = pc.localDescription;
    const answer = await request(`/v1/sessions/${encodeURIComponent(sid)}/offer`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
      body: { sdp: local.sdp, type: "offer", consent },
    });
    if (!answer || answer.type !== "answer" || typeof answer.sdp !== "string") {
      throw new ApiError("server", { message: "no answer in the reply" });
    }
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (e) {
      throw new ApiError("connection_failed", { message: String(e && e.message) });
    }
    return { pc, channel };
  } catch (err) {
    try {
      pc.close();
    } catch (e) {
      /* ignore */
    }
    if (err instanceof ApiError) throw err;
    throw new ApiError("connection_failed", { message: String(err && err.message) });
  }
}
