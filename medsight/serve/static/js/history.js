// Studies and result history: the caller's own, or everyone's for admins and viewers (the API decides),
// then the stored DICOM studies without results; a DICOM study's series can be predicted on from here.

import { api } from "./api.js";
import { $, el, percent, shortId, when } from "./dom.js";
import { hideSeries, showSeries, storedStudyUids } from "./series.js";

// A classifier's probability of its finding; a segmentation's mask share; an ECG record's beat counts.
function probabilityOf(result) {
  if (result.task === "segmentation") return `mask ${percent(result.segmentation.foreground_fraction)}`;
  if (result.task === "ecg") return Object.entries(result.ecg.counts).map(([k, n]) => `${k} ${n}`).join(", ");
  const index = result.classes.indexOf(result.label);
  return index >= 0 ? percent(result.probabilities[index]) : "";
}

function resultRow(result, onOpen) {
  const open = el("button", { type: "button", class: "secondary", text: "Open", onclick: () => onOpen(result) });
  open.setAttribute("aria-label", `Open the result of ${when(result.created_at)}`);
  return el("tr", {}, [
    el("td", { text: when(result.created_at) }),
    el("td", { text: result.label }),
    el("td", { text: probabilityOf(result) }),
    el("td", { text: `${result.model.name} ${result.model.version}` }),
    el("td", { text: result.user ?? "" }),
    el("td", {}, [open]),
  ]);
}

function showStudy(study, row, actions) {
  document.querySelectorAll("#studies-table tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  const hasResults = study.results.length > 0;
  $("#results-title").textContent = `Results of study ${shortId(study.id, 40)}`;
  $("#results-title").hidden = !hasResults;
  $("#results-table").hidden = !hasResults;
  $("#results-table tbody").replaceChildren(...study.results.map((r) => resultRow(r, actions.onOpen)));
  return showSeries(study, actions.onPredict);
}

function studyRow(study, actions, report) {
  const row = el("tr");
  const button = el("button", { type: "button", class: "link", text: shortId(study.id), title: study.id });
  button.addEventListener("click", () => report(() => showStudy(study, row, actions)));
  row.append(
    el("td", { class: "uid" }, [button]),
    el("td", { text: study.kind === "dicom" ? "DICOM" : "picture" }),
    el("td", { text: String(study.result_count) }),
    el("td", { text: study.latest_label }),
    el("td", { text: study.latest_at ? when(study.latest_at) : "" }),
  );
  return row;
}

// A stored study nobody has predicted on yet: listed so that its series can be.
function storedStudy(uid) {
  return { id: uid, kind: "dicom", result_count: 0, latest_label: "no results yet", latest_at: null, results: [] };
}

// actions: onOpen(result) opens a result, onPredict(seriesUid, button) predicts on a stored series;
// report(action) shows a refusal in the server's words.
export async function loadHistory(actions, report) {
  const [studies, stored] = await Promise.all([api("/api/studies?limit=500"), storedStudyUids()]);
  const known = new Set(studies.map((study) => study.id));
  const all = [...studies, ...stored.filter((uid) => !known.has(uid)).map(storedStudy)];
  const rows = all.map((study) => studyRow(study, actions, report));
  if (!rows.length) rows.push(el("tr", {}, [el("td", { colspan: "5", text: "No results yet: upload an image on the Predict page." })]));
  $("#studies-table tbody").replaceChildren(...rows);
  $("#results-title").hidden = true;
  $("#results-table").hidden = true;
  hideSeries();
}
