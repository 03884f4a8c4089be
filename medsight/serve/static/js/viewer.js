// The image viewer: a grey image with window/level, zoom, and the heatmap drawn over it in colour
// with an adjustable opacity. Window/level works on the 8-bit preview the server made (stretched to the
// image's own range), which is enough to bring out soft tissue or bone on a CT or MR slice.

const MIN_ZOOM = 0.25;
const MAX_ZOOM = 8;
const BASE_SIDE = 512; // the longer side at 100 %: a 28-pixel image is not drawn 28 pixels wide

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.addEventListener("load", () => resolve(image));
    image.addEventListener("error", () => reject(new Error(`the image ${url} could not be loaded`)));
    image.src = url;
  });
}

function pixelsOf(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  return context.getImageData(0, 0, canvas.width, canvas.height);
}

// "jet", the colour map of the server's overlay, so both pictures read the same way.
function jet(value) {
  const channel = (offset) => Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * value - offset))));
  return [channel(3), channel(2), channel(1)];
}

function colourise(greyData) {
  const out = new ImageData(greyData.width, greyData.height);
  for (let i = 0; i < greyData.data.length; i += 4) {
    const [r, g, b] = jet(greyData.data[i] / 255);
    out.data.set([r, g, b, 255], i);
  }
  return out;
}

// A segmentation's mask (0/255): red where the structure is, clear elsewhere; the opacity slider blends it.
const MASK_COLOUR = [255, 40, 40];

function tint(maskData) {
  const out = new ImageData(maskData.width, maskData.height);
  for (let i = 0; i < maskData.data.length; i += 4) {
    if (maskData.data[i] > 127) out.data.set([...MASK_COLOUR, 255], i);
  }
  return out;
}

function toCanvas(imageData) {
  const canvas = document.createElement("canvas");
  canvas.width = imageData.width;
  canvas.height = imageData.height;
  canvas.getContext("2d").putImageData(imageData, 0, 0);
  return canvas;
}

export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.source = null; // ImageData of the grey image, untouched
    this.base = null; // canvas of the image after window/level
    this.heatmap = null; // canvas of the coloured map
    this.showHeatmap = true;
    this.opacity = 0.45;
    this.window = 255;
    this.level = 128;
    this.zoom = 1;
  }

  // baseUrl: the image; mapUrl: the grey map, or a segmentation's mask when kind is "mask" (or null).
  // Both same-origin, so pixels are readable.
  async load(baseUrl, mapUrl, kind = "heatmap") {
    const [base, map] = await Promise.all([loadImage(baseUrl), mapUrl ? loadImage(mapUrl) : null]);
    this.source = pixelsOf(base);
    this.canvas.dataset.imageSize = `${base.naturalWidth}x${base.naturalHeight}`;
    this.canvas.dataset.map = map ? kind : "none";
    this.heatmap = map ? toCanvas((kind === "mask" ? tint : colourise)(pixelsOf(map))) : null;
    this.applyWindow();
  }

  setWindowLevel(window, level) {
    this.window = Math.max(1, window);
    this.level = level;
    this.applyWindow();
  }

  applyWindow() {
    if (!this.source) return;
    const low = this.level - this.window / 2;
    const scale = 255 / this.window;
    const out = new ImageData(this.source.width, this.source.height);
    const src = this.source.data;
    for (let i = 0; i < src.length; i += 4) {
      for (let c = 0; c < 3; c += 1) out.data[i + c] = Math.min(255, Math.max(0, (src[i + c] - low) * scale));
      out.data[i + 3] = 255;
    }
    this.base = toCanvas(out);
    this.draw();
  }

  setZoom(zoom) {
    this.zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, zoom));
    this.draw();
    return this.zoom;
  }

  draw() {
    if (!this.base) return;
    const fit = BASE_SIDE / Math.max(this.base.width, this.base.height);
    this.canvas.width = Math.round(this.base.width * fit * this.zoom);
    this.canvas.height = Math.round(this.base.height * fit * this.zoom);
    const { context, canvas } = this;
    context.imageSmoothingEnabled = true;
    context.globalAlpha = 1;
    context.drawImage(this.base, 0, 0, canvas.width, canvas.height);
    if (this.showHeatmap && this.heatmap) {
      context.globalAlpha = this.opacity;
      context.drawImage(this.heatmap, 0, 0, canvas.width, canvas.height);
      context.globalAlpha = 1;
    }
  }
}
