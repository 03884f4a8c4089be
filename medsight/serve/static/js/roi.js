// The optional region of interest (a binary mask) sent beside an image to a segmentation model: offered
// only for one, with a hint when the model was trained inside regions of interest (e.g. a fundus
// camera's field of view), and kept for the next images until removed (one camera, one field of view).

import { $ } from "./dom.js";

const TRAINED_WITH =
  "This model was trained inside each image's region of interest (e.g. its field of view): choose the " +
  "image's mask here before the image, or the whole image is segmented.";
const OPTIONAL =
  "Optional: a binary mask of the image's size, chosen before the image; nothing outside it is called structure.";

function clearRoi() {
  $("#roi-input").value = "";
  $("#roi-clear").hidden = true;
}

// Offers the input for a segmentation model; for any other it is hidden and emptied.
export function offerRoiFor(model) {
  const segmentation = model?.task === "segmentation";
  $("#roi-box").hidden = !segmentation;
  if (!segmentation) clearRoi();
  $("#roi-hint").textContent = model?.trained_with_roi ? TRAINED_WITH : OPTIONAL;
}

// The chosen mask, or null when none is chosen or the model takes none.
export function chosenRoi() {
  return $("#roi-box").hidden ? null : ($("#roi-input").files[0] ?? null);
}

export function wireRoi() {
  $("#roi-input").addEventListener("change", () => {
    $("#roi-clear").hidden = !$("#roi-input").files.length;
  });
  $("#roi-clear").addEventListener("click", clearRoi);
}
