// The screen as a light source. This is the one place that paints the challenge colours;
// anything that needs to know which light the screen is giving off (the test hook's
// synthetic camera) listens here.

export const NEUTRAL_RGB = Object.freeze([40, 40, 40]);

let flashEl = null;
let current = NEUTRAL_RGB.slice();
let colourOn = false;
const listeners = new Set();

export function attachFlash(el) {
  flashEl = el;
}

/** True when `rgb` is [r, g, b] with integers 0..255. */
export function validRgb(rgb) {
  return Array.isArray(rgb) && rgb.length === 3 &&
    rgb.every((v) => Number.isInteger(v) && v >= 0 && v <= 255);
}

function notify(source) {
  const rgb = current.slice();
  for (const fn of listeners) {
    try {
      fn(rgb, source);
    } catch (e) {
      console.error(e);
    }
  }
}

/**
 * Paint the full-screen element with exactly this colour, now. No transition or
 * animation applies to it (see style.css); the colour shows from the next frame.
 */
export function paintColour(rgb) {
  if (!validRgb(rgb)) throw new TypeError("rgb must be three integers 0..255");
  const [r, g, b] = rgb;
  if (flashEl) {
    flashEl.style.backgroundColor = `rgb(${r}, ${g}, ${b})`;
    if (flashEl.hidden) flashEl.hidden = false;
  }
  current = [r, g, b];
  colourOn = true;
  notify("colour");
}

/** Back to the neutral dark grey page. */
export function paintNeutral() {
  if (flashEl) {
    flashEl.hidden = true;
    flashEl.style.backgroundColor = "";
  }
  const changed = colourOn || current.some((v, i) => v !== NEUTRAL_RGB[i]);
  current = NEUTRAL_RGB.slice();
  colourOn = false;
  if (changed) notify("neutral");
}

/** The colour the screen is giving off now: the challenge colour or the neutral grey. */
export function screenColour() {
  return current.slice();
}

export function isColourOn() {
  return colourOn;
}

/** Subscribe to every change of the screen's colour. Returns an unsubscribe function. */
export function onPaint(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/**
 * Resolves with the rAF timestamp of the frame after the one that painted the current
 * style: the first rAF callback runs while the browser builds the frame holding the new
 * colour; the second runs at the next frame, once that frame has been handed to the
 * display. Its timestamp is `performance.now()`-based milliseconds.
 */
export function afterPaint() {
  return new Promise((resolve) => {
    requestAnimationFrame(() => {
      requestAnimationFrame((t2) => resolve(t2));
    });
  });
}
