// Stored DICOM studies and their series, through the app's own DICOMweb search (QIDO-RS), so that a
// 3D model can be run on a whole series from the History page.

import { ApiError, api } from "./api.js";
import { $, el } from "./dom.js";

// DICOM JSON keys (PS3.18 F.2): an attribute's first value, or "" when it has none.
const STUDY_UID = "0020000D";
const SERIES_UID = "0020000E";
const MODALITY = "00080060";
const SERIES_DESCRIPTION = "0008103E";
const SERIES_INSTANCES = "00201209";

function first(dataset, tag) {
  const value = dataset[tag]?.Value?.[0];
  return value === undefined || value === null ? "" : String(value);
}

// A page of the Study Instance UIDs in the store (QIDO-RS order); none for a role that may not search the store (viewers).
export async function storedStudyUids(offset, limit) {
  try {
    const studies = await api(`/dicomweb/studies?offset=${offset}&limit=${limit}`);
    return studies.map((study) => first(study, STUDY_UID));
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return [];
    throw error;
  }
}

function seriesRow(series, onPredict) {
  const uid = first(series, SERIES_UID);
  const description = first(series, SERIES_DESCRIPTION);
  const predict = el("button", { type: "button", text: "Predict" });
  predict.setAttribute("aria-label", `Predict on the series ${description || uid}`);
  predict.addEventListener("click", () => onPredict(uid, predict));
  return el("tr", {}, [
    el("td", { text: first(series, MODALITY) }),
    el("td", { text: description || "(no description)" }),
    el("td", { text: first(series, SERIES_INSTANCES) }),
    el("td", {}, [predict]),
  ]);
}

function setSeriesShown(visible) {
  $("#series-title").hidden = !visible;
  $("#series-hint").hidden = !visible;
  $("#series-table").hidden = !visible;
}

// The series of a stored study, each with a Predict button; an upload's picture has none.
export async function showSeries(study, onPredict) {
  setSeriesShown(false);
  if (study.kind !== "dicom") return;
  const found = await api(`/dicomweb/studies/${encodeURIComponent(study.id)}/series`);
  const rows = found.map((series) => seriesRow(series, onPredict));
  if (!rows.length) rows.push(el("tr", {}, [el("td", { colspan: "4", text: "No series of this study is stored." })]));
  $("#series-table tbody").replaceChildren(...rows);
  setSeriesShown(true);
}

export function hideSeries() {
  setSeriesShown(false);
}
