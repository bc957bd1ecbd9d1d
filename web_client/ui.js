// DOM of the applicant's page: which view is shown and what it says. Text comes from
// i18n.t(key); this module holds no user-visible text of its own.
import { t, has } from "./i18n.js";

const GUIDANCE_CODES = new Set([
  "no_face", "multiple_faces", "move_closer", "move_back", "centre_face",
  "hold_still", "too_dark", "too_bright", "ok",
]);

const ICONS = {
  passed: '<svg viewBox="0 0 48 48"><circle cx="24" cy="24" r="22" fill="none" stroke="currentColor" stroke-width="4"/><path d="M14 25l7 7 13-15" fill="none" stroke="currentColor" stroke-width="4" stroke-linecap="round" stroke-linejoin="round"/></svg>',
  failed: '<svg viewBox="0 0 48 48"><circle cx="24" cy="24" r="22" fill="none" stroke="currentColor" stroke-width="4"/><path d="M16 16l16 16M32 16 16 32" fill="none" stroke="currentColor" stroke-width="4" stroke-linecap="round"/></svg>',
  retry: '<svg viewBox="0 0 48 48"><path d="M38 24a14 14 0 1 1-4.1-9.9" fill="none" stroke="currentColor" stroke-width="4" stroke-linecap="round"/><path d="M35 6v9h-9" fill="none" stroke="currentColor" stroke-width="4" stroke-linecap="round" stroke-linejoin="round"/></svg>',
  error: '<svg viewBox="0 0 48 48"><path d="M24 4 2 43h44L24 4z" fill="none" stroke="currentColor" stroke-width="4" stroke-linejoin="round"/><path d="M24 18v12" stroke="currentColor" stroke-width="4" stroke-linecap="round"/><circle cx="24" cy="36" r="2.5" fill="currentColor"/></svg>',
  cancelled: '<svg viewBox="0 0 48 48"><circle cx="24" cy="24" r="22" fill="none" stroke="currentColor" stroke-width="4"/><path d="M17 17h14v14H17z" fill="currentColor"/></svg>',
};

export class View {
  constructor(doc = document) {
    const $ = (id) => doc.getElementById(id);
    this.doc = doc;
    this.views = {
      loading: $("view-loading"),
      consent: $("view-consent"),
      stage: $("view-stage"),
      message: $("view-message"),
    };
    this.el = {
      app: $("app"),
      progress: $("progress"),
      progressBar: doc.querySelector("#progress .progress-bar"),
      noticeIntro: $("notice-intro"),
      noticeWhy: $("notice-why"),
      noticeKeep: $("notice-keep"),
      noticeWho: $("notice-who"),
      noticeContact: $("notice-contact"),
      noticeMore: $("notice-more"),
      noticeMoreLink: $("notice-more-link"),
      form: $("consent-form"),
      privacy: $("consent-privacy"),
      age: $("consent-age"),
      ageLabel: $("consent-age-label"),
      start: $("start"),
      startHint: $("start-hint"),
      stageTitle: $("stage-title"),
      stageBody: $("stage-body"),
      selfview: $("selfview"),
      video: $("video"),
      oval: $("oval"),
      countdown: $("countdown"),
      spinner: $("stage-spinner"),
      guidance: $("guidance"),
      prepareWarning: $("prepare-warning"),
      cancel: $("cancel"),
      messageIcon: $("message-icon"),
      messageTitle: $("message-title"),
      messageBody: $("message-body"),
      messageExtra: $("message-extra"),
      messageActions: $("message-actions"),
      flash: $("flash"),
    };
    this.current = null;
    this.guidanceCode = null;
    this.countdownTimer = null;
  }

  /** Show one of: loading, consent, stage, message. Moves focus to its heading. */
  show(name, { focus = true } = {}) {
    for (const [k, v] of Object.entries(this.views)) v.hidden = k !== name;
    const changed = this.current !== name;
    this.current = name;
    this.el.app.dataset.view = name;
    if (focus && changed) {
      const h = this.views[name].querySelector(".view-title");
      if (h) h.focus({ preventScroll: false });
    }
  }

  // ---- Consent --------------------------------------------------------------------

  renderConsent(cfg) {
    const e = this.el;
    e.noticeIntro.textContent = t("notice_intro");
    e.noticeWhy.textContent = t("notice_why");
    e.noticeKeep.textContent = t("notice_keep");
    e.noticeWho.textContent = t("notice_who");
    e.ageLabel.textContent = t("consent_age");
    if (cfg.contact) {
      e.noticeContact.textContent = t("notice_contact", { contact: cfg.contact });
      e.noticeContact.hidden = false;
    }
    if (cfg.privacy_url) {
      e.noticeMoreLink.href = cfg.privacy_url;
      e.noticeMore.hidden = false;
    }
    this.updateStartButton();
  }

  /** Wire the two checkboxes and the Start button; `onStart` runs on submit with both ticked. */
  bindConsent(onStart) {
    const e = this.el;
    const update = () => this.updateStartButton();
    e.privacy.addEventListener("change", update);
    e.age.addEventListener("change", update);
    e.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!this.consentGiven()) return;
      onStart();
    });
  }

  consentGiven() {
    return this.el.privacy.checked && this.el.age.checked;
  }

  updateStartButton() {
    const ok = this.consentGiven();
    this.el.start.disabled = !ok;
    this.el.startHint.hidden = ok;
  }

  // ---- Stage (camera, fitting, prepare, rest, scoring) ----------------------------

  attachStream(stream) {
    const v = this.el.video;
    if (v.srcObject !== stream) v.srcObject = stream;
    const p = v.play && v.play();
    if (p && p.catch) p.catch(() => {});
  }

  detachStream() {
    const v = this.el.video;
    try {
      v.pause();
    } catch (e) {
      /* ignore */
    }
    v.srcObject = null;
  }

  /**
   * mode: camera_request | connecting | fitting | prepare | rest | scoring
   */
  stage(mode) {
    const e = this.el;
    this.show("stage", { focus: this.current !== "stage" });
    this.el.app.dataset.stage = mode;
    const titles = {
      camera_request: ["camera_asking_heading", "camera_asking"],
      connecting: ["connecting_heading", "connecting"],
      fitting: ["fit_heading", null],
      prepare: ["prepare_heading", "prepare_body"],
      rest: ["rest_heading", "rest_body"],
      scoring: ["scoring_heading", "scoring_body"],
    };
    const [title, body] = titles[mode];
    e.stageTitle.textContent = t(title);
    e.stageBody.textContent = body ? t(body) : "";
    e.stageBody.hidden = !body;
    const showSelf = mode === "connecting" || mode === "fitting" || mode === "prepare";
    e.selfview.hidden = !showSelf;
    e.spinner.hidden = !(mode === "camera_request" || mode === "scoring");
    e.guidance.hidden = !(mode === "fitting" || mode === "prepare");
    e.prepareWarning.hidden = mode !== "prepare";
    if (mode === "prepare") e.prepareWarning.textContent = t("prepare_warning");
    e.cancel.textContent = t(mode === "prepare" || mode === "rest" ? "stop" : "cancel");
    e.cancel.hidden = mode === "scoring";
    e.progress.hidden = !(mode === "fitting" || mode === "prepare" || mode === "rest" || mode === "scoring");
    if (mode !== "prepare") this.stopCountdown();
    if (mode === "connecting" || mode === "camera_request") this.setGuidance(null);
    if (mode === "fitting" && !this.guidanceCode) this.setGuidance("wait");
  }

  /** Show the text for a guidance code; repeated codes do not re-announce. */
  setGuidance(code) {
    if (code !== null && code !== "wait" && !GUIDANCE_CODES.has(code)) return false;
    if (code === this.guidanceCode) return false;
    this.guidanceCode = code;
    const e = this.el;
    e.guidance.textContent = code ? t(`guidance_${code}`) : "";
    e.guidance.dataset.code = code || "";
    e.oval.classList.toggle("ok", code === "ok");
    e.oval.classList.toggle("warn", !!code && code !== "ok" && code !== "wait");
    return true;
  }

  setProgress(value) {
    const v = Math.max(0, Math.min(1, Number(value) || 0));
    const pct = Math.round(v * 100);
    this.el.progress.setAttribute("aria-valuenow", String(pct));
    this.el.progressBar.style.width = `${pct}%`;
  }

  /** Count down to the flashes: "Starting in 3", 2, 1, then "Now". */
  startCountdown(inMs) {
    this.stopCountdown();
    const e = this.el;
    const end = performance.now() + Math.max(0, Number(inMs) || 0);
    const tick = () => {
      const left = end - performance.now();
      if (left <= 0) {
        e.countdown.textContent = t("prepare_now");
        e.countdown.dataset.n = "0";
        this.stopCountdown(false);
        return;
      }
      const n = Math.ceil(left / 1000);
      if (e.countdown.dataset.n !== String(n)) {
        e.countdown.dataset.n = String(n);
        e.countdown.textContent = String(n);
        e.countdown.setAttribute("aria-label", t("prepare_count", { n }));
      }
    };
    e.countdown.hidden = false;
    tick();
    this.countdownTimer = setInterval(tick, 100);
  }

  stopCountdown(hide = true) {
    if (this.countdownTimer) clearInterval(this.countdownTimer);
    this.countdownTimer = null;
    if (hide) {
      this.el.countdown.hidden = true;
      delete this.el.countdown.dataset.n;
    }
  }

  // ---- Messages (outcomes, errors) ------------------------------------------------

  /**
   * kind: passed | failed | retry | error | cancelled
   * actions: [{key, onClick, primary, disabledFor (seconds)}]
   */
  message({ kind, title, body, extra = null, actions = [] }) {
    const e = this.el;
    this.stopCountdown();
    e.progress.hidden = true;
    delete this.el.app.dataset.stage;
    e.messageIcon.innerHTML = ICONS[kind] || ICONS.error;
    e.messageIcon.dataset.kind = kind;
    this.views.message.dataset.kind = kind;
    e.messageTitle.textContent = title;
    e.messageBody.textContent = body;
    e.messageExtra.textContent = extra || "";
    e.messageExtra.hidden = !extra;
    e.messageActions.replaceChildren();
    for (const a of actions) {
      const b = this.doc.createElement("button");
      b.type = "button";
      b.className = `button ${a.primary ? "primary" : "secondary"}`;
      b.textContent = t(a.key);
      b.addEventListener("click", () => {
        b.disabled = true;
        a.onClick();
      });
      if (a.disabledFor > 0) {
        b.disabled = true;
        setTimeout(() => {
          b.disabled = false;
          if (a.onEnable) a.onEnable();
        }, a.disabledFor * 1000);
      }
      e.messageActions.appendChild(b);
    }
    // Focus the heading even when a message replaces another message.
    this.current = null;
    this.show("message");
  }

  hasText(key) {
    return has(key);
  }
}
