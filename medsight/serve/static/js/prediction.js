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

function show(selector, visible) {
  $(selector).hidden = !visible;
}

function setLink(selector, url) {
  show(selector, Boolean(url));
  if (url) $(selector).href = url;
}

const known = (value) => value !== null && value !== undefined;

// A segmentation's mask: how much of the image (or series) it covers, and its area (or volume) when the
// image gives its spacing.
function segmentationSummary(result) {
  const seg = result.segmentation;
  const series = seg.shape.length === 3; // (slices, rows, columns)
  let size = "";
  if (known(seg.volume_ml)) size = `, ${seg.volume_ml.toFixed(1)} mL`;
  else if (known(seg.area_mm2)) size = `, ${seg.area_mm2.toFixed(1)} mm²`;
  const [whole, units] = series ? ["series", "voxels"] : ["image", "pixels"];
  return `Mask: ${percent(seg.foreground_fraction)} of the ${whole} (${seg.foreground_pixels} ${units}${size}), ` +
    `cut at probability ${percent(result.threshold)}.`;
}

// Whether a region of interest bounded the mask, in the API's words when the model wanted one and got none.
function roiLine(result) {
  const seg = result.segmentation;
  if (seg.roi_applied) return "A region of interest was applied: nothing outside it is called structure.";
  const whole = seg.shape.length === 3 ? "series" : "image";
  return seg.roi_note || `No region of interest was given: the whole ${whole} was segmented.`;
}

// An ECG record: beats per class, where the beats came from, and what was done to the record.
function showBeats(result) {
  const ecg = result.ecg;
  const total = ecg.beats.length;
  $("#beat-counts").replaceChildren(
    ...Object.entries(ecg.counts).map(([name, count]) => el("li", { text: `${name}: ${count} of ${total} beats` })),
  );
  $("#result-summary").textContent =
    `${total} beats (${ecg.beats_from}) in ${ecg.seconds.toFixed(0)} s; a beat is "${result.classes[1]}" ` +
    `at probability ${percent(result.threshold)} or above.${ecg.notes.length ? ` ${ecg.notes.join(" ")}` : ""}`;
  if (ecg.strip_url) $("#strip-img").src = ecg.strip_url;
  show("#strip-figure", Boolean(ecg.strip_url));
}

// The threshold belongs to the positive class (the second of two); other models take the largest.
function probabilityBars(result) {
  const binary = result.classes.length === 2 && result.threshold !== null;
  return result.classes.map((name, index) =>
    bar(name, result.probabilities[index], {
      positive: name === result.label,
      threshold: binary && index === 1 ? result.threshold : null,
    }),
  );
}

export function showPrediction(result) {
  $("#result-label").textContent = result.label;
  $("#prob-bars").replaceChildren(...(result.task === "classification" ? probabilityBars(result) : []));
  show("#result-summary", result.task !== "classification");
  show("#beat-counts", result.task === "ecg");
  show("#strip-figure", false);
  show("#result-roi", result.task === "segmentation");
  if (result.task === "segmentation") {
    $("#result-summary").textContent = segmentationSummary(result);
    $("#result-roi").textContent = roiLine(result);
  }
  if (result.task === "ecg") showBeats(result);
  const timing = result.timing_ms;
  const total = timing.preprocess + timing.inference + timing.explain;
  const method = result.explain_method ? `${result.explain_method} heatmap` : result.task;
  $("#result-meta").textContent =
    `Model ${result.model.name} ${result.model.version} · ${method} · ${total.toFixed(0)} ms on the server`;
  $("#result-card-link").href = modelCardUrl(result.model.name, result.model.version);
  setLink("#result-overlay-link", result.overlay_url);
  setLink("#result-heatmap-link", result.heatmap_url);
  setLink("#result-mask-link", result.segmentation?.mask_url);
  show("#overlay-figure", Boolean(result.overlay_url));
  if (result.overlay_url) $("#overlay-img").src = result.overlay_url;
  $("#result-card").hidden = false;
}
