// Look-up of user-visible text by key. The texts themselves live in strings.js.
import { STRINGS } from "./strings.js";

function pickLanguage(preferred) {
  const available = Object.keys(STRINGS);
  for (const tag of preferred) {
    if (!tag) continue;
    const exact = available.find((a) => a.toLowerCase() === tag.toLowerCase());
    if (exact) return exact;
    const base = tag.split("-")[0].toLowerCase();
    const partial = available.find((a) => a.split("-")[0].toLowerCase() === base);
    if (partial) return partial;
  }
  return "en";
}

export const lang = pickLanguage(
  (typeof navigator !== "undefined" && (navigator.languages || [navigator.language])) || []
);

const table = STRINGS[lang];

let globalVars = {};

/** Values every text may use, e.g. {operator}, {min_age}, {hours}. */
export function setGlobalVars(vars) {
  globalVars = { ...globalVars, ...vars };
}

export function has(key) {
  return Object.prototype.hasOwnProperty.call(table, key) ||
    Object.prototype.hasOwnProperty.call(STRINGS.en, key);
}

/** The text for `key` with {placeholders} filled from `vars` then the global values. */
export function t(key, vars = {}) {
  let s = table[key];
  if (s === undefined) s = STRINGS.en[key];
  if (s === undefined) {
    console.warn("missing string", key);
    return key;
  }
  return s.replace(/\{(\w+)\}/g, (m, name) => {
    if (name in vars) return String(vars[name]);
    if (name in globalVars) return String(globalVars[name]);
    return m;
  });
}

/** Fill every element carrying data-i18n="key" (text) or data-i18n-aria="key" (aria-label). */
export function applyStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll("[data-i18n-aria]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAria));
  }
  if (root === document) {
    document.documentElement.lang = lang;
    document.title = t("page_title");
  }
}
