// Building DOM from data without innerHTML: text from the server is always text, never markup.

export const $ = (selector) => document.querySelector(selector);

export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of [].concat(children)) node.append(child);
  return node;
}

export function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function percent(value) {
  return `${(100 * value).toFixed(1)} %`;
}

// "upload-3f2a…" and DICOM UIDs are long: show their start, keep the whole in a tooltip.
export function shortId(id, keep = 24) {
  return id.length > keep ? `${id.slice(0, keep)}…` : id;
}
