// Studies and result history: the caller's own, or everyone's for admins and viewers (the API decides).

import { api } from "./api.js";
import { $, el, percent, shortId, when } from "./dom.js";

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

function showStudy(study, row, onOpen) {
  document.querySelectorAll("#studies-table tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  $("#results-title").textContent = `Results of study ${shortId(study.id, 40)}`;
  $("#results-title").hidden = false;
  $("#results-table").hidden = false;
  $("#results-table tbody").replaceChildren(...study.results.map((r) => resultRow(r, onOpen)));
}

function studyRow(study, onOpen) {
  const row = el("tr");
  const button = el("button", { type: "button", class: "link", text: shortId(study.id), title: study.id });
  button.addEventListener("click", () => showStudy(study, row, onOpen));
  row.append(
    el("td", { class: "uid" }, [button]),
    el("td", { text: study.kind === "dicom" ? "DICOM" : "picture" }),
    el("td", { text: String(study.result_count) }),
    el("td", { text: study.latest_label }),
    el("td", { text: when(study.latest_at) }),
  );
  return row;
}

export async function loadHistory(onOpen) {
  const studies = await api("/api/studies?limit=500");
  const rows = studies.map((study) => studyRow(study, onOpen));
  if (!rows.length) rows.push(el("tr", {}, [el("td", { colspan: "5", text: "No results yet: upload an image on the Predict page." })]));
  $("#studies-table tbody").replaceChildren(...rows);
  $("#results-title").hidden = true;
  $("#results-table").hidden = true;
}
