// The medsight page: login, views (predict, history, admin), upload with progress, and the viewer.

import { loadAdmin, wireAdmin } from "./admin.js";
import { ApiError, api, setCsrfToken, upload } from "./api.js";
import { $, el } from "./dom.js";
import { loadHistory } from "./history.js";
import { modelCardUrl, showPrediction } from "./prediction.js";
import { chosenRoi, offerRoiFor, wireRoi } from "./roi.js";
import { Viewer } from "./viewer.js";

const VIEWS = ["login", "predict", "history", "admin"];
// What a browser draws by itself; anything else (DICOM, NIfTI) the server turns into a PNG first.
const BROWSER_IMAGES = new Set(["image/png", "image/jpeg"]);
const ZOOM_STEP = 1.25;

const viewer = new Viewer($("#canvas"));
let session = null;
let previewUrl = null;
let models = []; // the model list, with each model's task

// ---- messages -------------------------------------------------------------------------------

function showError(message) {
  $("#error-text").textContent = message;
  $("#error").hidden = false;
}

function clearError() {
  $("#error").hidden = true;
}

// Runs an action; a refusal is shown in the server's words, an ended session sends us to the login.
async function report(action) {
  clearError();
  try {
    return await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && session) {
      leave();
      showError("Your session has ended. Please log in again.");
    } else {
      showError(error.message || String(error));
    }
    return undefined;
  }
}

// ---- views and session ----------------------------------------------------------------------

function showView(name) {
  for (const view of VIEWS) $(`#view-${view}`).hidden = view !== name;
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  if (name === "history") report(() => loadHistory({ onOpen: openResult, onPredict: predictSeries }, report));
  if (name === "admin") report(() => loadAdmin(report));
}

async function enter(info) {
  session = info;
  setCsrfToken(info.csrf_token);
  $("#who-name").textContent = `${info.user} (${info.role})`;
  $("#nav").hidden = false;
  $("#who").hidden = false;
  document.querySelector(".admin-only").hidden = info.role !== "admin";
  showView("predict");
  await report(loadModels);
  $("#main").focus();
}

function leave() {
  session = null;
  setCsrfToken(null);
  $("#nav").hidden = true;
  $("#who").hidden = true;
  $("#result-card").hidden = true;
  $("#viewer-card").hidden = true;
  $("#password").value = "";
  showView("login");
  $("#username").focus();
}

async function login(event) {
  event.preventDefault();
  const json = { username: $("#username").value.trim(), password: $("#password").value };
  const info = await report(() => api("/api/auth/session", { method: "POST", json }));
  if (info) await enter(info);
}

async function logout() {
  await report(() => api("/api/auth/session/logout", { method: "POST" }));
  leave();
}

// ---- models ---------------------------------------------------------------------------------

function selectedModel() {
  return models.find((m) => `${m.name}:${m.version}` === $("#model-select").value);
}

function selectedTask() {
  return selectedModel()?.task ?? "classification";
}

// The model card's link, and a segmentation model's region-of-interest input.
function modelChosen() {
  const [name, version] = ($("#model-select").value || "").split(":");
  const link = $("#model-card-link");
  link.hidden = !name;
  if (name) link.href = modelCardUrl(name, version);
  offerRoiFor(selectedModel());
}

async function loadModels() {
  models = await api("/api/models");
  const options = models.map((m) =>
    el("option", { value: `${m.name}:${m.version}`, text: `${m.name} ${m.version}${m.is_default ? " (default)" : ""}` }),
  );
  const select = $("#model-select");
  select.replaceChildren(...options);
  const chosen = models.find((m) => m.is_default) ?? models[models.length - 1];
  if (chosen) select.value = `${chosen.name}:${chosen.version}`;
  select.disabled = models.length === 0;
  if (!models.length) showError("No model is registered yet: ask an administrator to register one.");
  modelChosen();
}

// ---- upload and predict ---------------------------------------------------------------------

function setProgress(label, fraction) {
  $("#progress-box").hidden = false;
  $("#progress-label").textContent = label;
  const bar = $("#upload-progress");
  if (fraction === null) bar.removeAttribute("value"); // indeterminate: the server is working
  else bar.value = Math.round(100 * fraction);
}

async function previewOf(file) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  const blob = BROWSER_IMAGES.has(file.type)
    ? file
    : await upload(`/api/preview?name=${encodeURIComponent(file.name)}`, file, { responseType: "blob" });
  previewUrl = URL.createObjectURL(blob);
  return previewUrl;
}

// One image (with its region of interest, when one is chosen), or the files of one ECG record: each a
// "file" part of the same request.
async function predictFiles(files, roi = null) {
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  if (roi) form.append("roi", roi, roi.name);
  if ($("#model-select").value) form.append("model", $("#model-select").value);
  const names = files.map((f) => f.name).join(", ") + (roi ? ` (region of interest ${roi.name})` : "");
  setProgress(`Uploading ${names}…`, 0);
  const result = await upload("/api/predict", form, {
    onProgress: (fraction) =>
      setProgress(fraction < 1 ? `Uploading ${names}…` : "Predicting…", fraction < 1 ? fraction : null),
  });
  setProgress(`Done: ${names}`, 1);
  return result;
}

// The map drawn over the image: a classifier's heatmap, or a segmentation's mask.
function mapOf(result) {
  if (result.task === "segmentation") return [result.segmentation.mask_url, "mask"];
  return [result.heatmap_url, "heatmap"];
}

async function handleFiles(files) {
  if (!files.length) return;
  await report(async () => {
    try {
      if (selectedTask() === "ecg") {
        $("#viewer-card").hidden = true; // a record has no image: the strip plot shows it
        showPrediction(await predictFiles(files));
        return;
      }
      const [file] = files;
      const [result, preview] = await Promise.all([predictFiles([file], chosenRoi()), previewOf(file)]);
      showPrediction(result);
      await showImage(preview, ...mapOf(result), file.name, true);
    } catch (error) {
      $("#progress-box").hidden = true;
      throw error;
    }
  });
}

// A whole stored series (History page), with the model chosen here; the answer is shown as a stored result.
async function predictSeries(series, button) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = "Predicting…";
  try {
    const json = { series, model: $("#model-select").value || undefined };
    const result = await report(() => api("/api/predict", { method: "POST", json }));
    if (result) openResult(result);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

// ---- viewer ---------------------------------------------------------------------------------

async function showImage(baseUrl, mapUrl, kind, title, original) {
  $("#heatmap-toggle").disabled = !mapUrl;
  $("#opacity").disabled = !mapUrl;
  $("#map-name").textContent = kind === "mask" ? "Mask" : "Heatmap";
  $("#viewer-note").textContent = original
    ? "Window and Level adjust contrast and brightness (useful on CT and MR); + and − zoom."
    : "The original image is not kept with a result: this is the stored overlay (image and map together).";
  resetView();
  await viewer.load(baseUrl, mapUrl, kind);
  $("#viewer-title").textContent = title; // last: the title names what the canvas shows now
  $("#viewer-card").hidden = false;
}

function openResult(result) {
  showView("predict");
  $("#progress-box").hidden = true; // the last upload's progress says nothing about this result
  showPrediction(result);
  $("#viewer-card").hidden = !result.overlay_url; // an ECG result has its strip plot instead
  if (!result.overlay_url) return;
  const title = `Result of ${new Date(result.created_at).toLocaleString()}`;
  report(() => showImage(result.overlay_url, null, mapOf(result)[1], title, false)); // names the map baked in
}

function setZoom(zoom) {
  $("#zoom-value").textContent = `${Math.round(100 * viewer.setZoom(zoom))}%`;
}

function resetView() {
  $("#window").value = 255;
  $("#level").value = 128;
  $("#opacity").value = 45;
  $("#heatmap-toggle").checked = true;
  viewer.opacity = 0.45;
  viewer.showHeatmap = true;
  viewer.setWindowLevel(255, 128);
  setZoom(1);
}

function wireViewer() {
  const windowLevel = () => viewer.setWindowLevel(Number($("#window").value), Number($("#level").value));
  $("#window").addEventListener("input", windowLevel);
  $("#level").addEventListener("input", windowLevel);
  $("#opacity").addEventListener("input", () => {
    viewer.opacity = Number($("#opacity").value) / 100;
    viewer.draw();
  });
  $("#heatmap-toggle").addEventListener("change", () => {
    viewer.showHeatmap = $("#heatmap-toggle").checked;
    viewer.draw();
  });
  $("#zoom-in").addEventListener("click", () => setZoom(viewer.zoom * ZOOM_STEP));
  $("#zoom-out").addEventListener("click", () => setZoom(viewer.zoom / ZOOM_STEP));
  $("#reset-view").addEventListener("click", resetView);
}

function wireDropzone() {
  const zone = $("#dropzone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    handleFiles([...event.dataTransfer.files]);
  });
  $("#file-input").addEventListener("change", (event) => {
    handleFiles([...event.target.files]); // copied first: clearing the input empties its list
    event.target.value = ""; // the same file again is a new upload
  });
}

// ---- start ----------------------------------------------------------------------------------

function wire() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#error-close").addEventListener("click", clearError);
  $("#model-select").addEventListener("change", modelChosen);
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  document.addEventListener("keydown", (event) => {
    if ($("#viewer-card").hidden || event.target.matches("input, select, textarea")) return;
    if (event.key === "+" || event.key === "=") setZoom(viewer.zoom * ZOOM_STEP);
    if (event.key === "-") setZoom(viewer.zoom / ZOOM_STEP);
  });
  wireViewer();
  wireDropzone();
  wireRoi();
  wireAdmin(report);
}

async function start() {
  wire();
  try {
    await enter(await api("/api/auth/session/csrf")); // still logged in after a reload
  } catch {
    leave();
  }
}

start();
