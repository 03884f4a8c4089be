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

// Rows per "Load more" (the table's data-page-size): the API's pages are asked for one longer, so
// that a page which is not the last is known to be so without counting.
function pageSize() {
  return Number($("#studies-table").dataset.pageSize) || 25;
}

function pager(fetchPage) {
  let offset = 0;
  const state = { more: true };
  state.next = async (size) => {
    const items = await fetchPage(offset, size + 1);
    state.more = items.length > size;
    offset += size;
    return items.slice(0, size);
  };
  return state;
}

// Studies with results come first, newest first; stored studies without results follow once every
// study with results is listed (so that none is listed twice).
function historyPages() {
  const results = pager((offset, limit) => api(`/api/studies?limit=${limit}&offset=${offset}`));
  const stored = pager((offset, limit) => storedStudyUids(offset, limit));
  const known = new Set();
  return {
    get more() {
      return results.more || stored.more;
    },
    async next(size) {
      const studies = [];
      while (studies.length < size && this.more) {
        if (results.more) {
          studies.push(...(await results.next(size)));
        } else {
          const uids = await stored.next(size);
          studies.push(...uids.filter((uid) => !known.has(uid)).map(storedStudy));
        }
        studies.forEach((study) => known.add(study.id));
      }
      return studies;
    },
  };
}

let pages = null; // the History page's current listing

async function showMore(actions, report) {
  const listing = pages;
  const studies = await listing.next(pageSize());
  if (listing !== pages) return; // the page was reloaded meanwhile
  $("#studies-table tbody").append(...studies.map((study) => studyRow(study, actions, report)));
  const shown = $("#studies-table tbody").children.length;
  if (!shown) {
    const empty = "No results yet: upload an image on the Predict page.";
    $("#studies-table tbody").append(el("tr", {}, [el("td", { colspan: "5", text: empty })]));
  }
  $("#history-more").hidden = !listing.more;
  const noun = shown === 1 ? "study" : "studies";
  $("#history-count").textContent = shown ? `${shown} ${noun} shown${listing.more ? "" : " (all)"}.` : "";
}

// actions: onOpen(result) opens a result, onPredict(seriesUid, button) predicts on a stored series;
// report(action) shows a refusal in the server's words.
export async function loadHistory(actions, report) {
  pages = historyPages();
  $("#studies-table tbody").replaceChildren();
  $("#history-more").onclick = () => report(() => showMore(actions, report));
  $("#results-title").hidden = true;
  $("#results-table").hidden = true;
  hideSeries();
  await showMore(actions, report);
}
