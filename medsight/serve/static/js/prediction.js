// The prediction panel: the finding, one probability bar per class with the threshold marked,
// and links to the model card and the stored images.

import { $, el, percent } from "./dom.js";

export function modelCardUrl(name, version) {
  const query = version ? `?version=${encodeURIComponent(version)}` : "";
  return `/api/models/${encodeURIComponent(name)}/card${query}`;
}

function bar(name, probability, { positive, threshold }) {
  const fill = el("div", { class: positive ? "bar-fill positive" : "bar-fill" });
  fill.style.width = `${(100 * probability).toFixed(1)}%`;
  const box = el("div", {
    class: "bar",
    role: "meter",
    "aria-label": `probability of ${name}`,
    "aria-valuemin": "0",
    "aria-valuemax": "1",
    "aria-valuenow": probability.toFixed(3),
    "aria-valuetext": percent(probability),
  }, [fill]);
  const children = [el("div", { class: "bar-name" }, [el("span", { text: name }), el("span", { text: percent(probability) })]), box];
  if (threshold !== null && threshold !== undefined) {
    const marker = el("div", { class: "threshold", title: `threshold ${percent(threshold)}` });
    marker.style.left = `${(100 * threshold).toFixed(1)}%`;
    box.append(marker);
    children.push(el("div", { class: "threshold-label", text: `Threshold ${percent(threshold)}: at or above it, the finding is "${name}".` }));
  }
  return el("div", { class: "bar-row" }, children);
}

// The threshold belongs to the positive class (the second of two); other models take the largest.
export function showPrediction(result) {
  $("#result-label").textContent = result.label;
  const binary = result.classes.length === 2 && result.threshold !== null;
  const bars = result.classes.map((name, index) =>
    bar(name, result.probabilities[index], {
      positive: name === result.label,
      threshold: binary && index === 1 ? result.threshold : null,
    }),
  );
  $("#prob-bars").replaceChildren(...bars);
  const timing = result.timing_ms;
  const total = timing.preprocess + timing.inference + timing.explain;
  $("#result-meta").textContent =
    `Model ${result.model.name} ${result.model.version} · ${result.explain_method} heatmap · ${total.toFixed(0)} ms on the server`;
  $("#result-card-link").href = modelCardUrl(result.model.name, result.model.version);
  $("#result-overlay-link").href = result.overlay_url;
  $("#result-heatmap-link").href = result.heatmap_url;
  $("#overlay-img").src = result.overlay_url;
  $("#result-card").hidden = false;
}
