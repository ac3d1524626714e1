// The explain page of fastlr: draw a digit and watch a linear model decide.
//
// Everything the page knows comes from the JSON object in #page-data (fastlr/page.py writes
// it): the model's weights and biases, a comparison model's, the confusion matrix on the test
// set and the misclassified test images. Nothing is fetched.
//
// The story, in the order of this file:
//   1. decoding the data (base64 float32 weights, base64 bytes 0-255 images);
//   2. mnistLike: the drawing made MNIST-like exactly as `fastlr predict` does it for an image
//      file (fastlr/images.py), including Pillow's Lanczos resampling; then deskew
//      (fastlr/preprocess.py) for a deskewing model;
//   3. the model: scores = W x + b, softmax, and the contributions w_c * x;
//   4. the page: the drawing pad, the probabilities, the maps, the templates, the confusion
//      matrix and the gallery of mistakes.
//
// Float32: NumPy computes images.mnist_like in float32; the steps that round there round here
// too (Math.fround), so the page and `fastlr predict` agree to about 1e-7 on each pixel.

"use strict";

const DATA = JSON.parse(document.getElementById("page-data").textContent);
const f32 = Math.fround;

// --- 1. decoding -------------------------------------------------------------------------------

function bytesFromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function float32sFromBase64(text) {
  const view = new DataView(bytesFromBase64(text).buffer);
  const values = new Float32Array(view.byteLength / 4);
  for (let i = 0; i < values.length; i++) values[i] = view.getFloat32(4 * i, true);
  return values;
}

// A model as the page uses it: W (C x D, row-major), b (C), the colour limit of its weights.
function decodeModel(entry) {
  return {weights: float32sFromBase64(entry.coef), bias: entry.intercept, limit: entry.limit,
          testAccuracy: entry.test_accuracy, l2: entry.l2, description: entry.description};
}

const SIDE = DATA.side;
const N_PIXELS = SIDE * SIDE;
const CLASSES = DATA.classes;
const MODEL = decodeModel(DATA.model);
const COMPARE = decodeModel(DATA.compare);
const MISTAKES = DATA.mistakes;
const MISTAKE_BYTES = bytesFromBase64(MISTAKES.pixels);
// The mean training image as the weights see it: the baseline of the maps of section 3.
const MEAN_IMAGE = float32sFromBase64(DATA.mean_image);

// Test image k of the gallery, pixels in [0, 1] as load_mnist gives them: float32(byte) / 255.
function mistakePixels(k) {
  const pixels = new Float32Array(N_PIXELS);
  for (let i = 0; i < N_PIXELS; i++) pixels[i] = f32(MISTAKE_BYTES[k * N_PIXELS + i] / 255);
  return pixels;
}

// --- 2. MNIST-like, as fastlr/images.py ---------------------------------------------------------

// Python's round(): halves go to the even neighbour.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// np.median of float32 values: the middle one, or the float32 mean of the two middle ones.
function median(values) {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  return n % 2 ? sorted[(n - 1) / 2] : f32((sorted[n / 2 - 1] + sorted[n / 2]) / 2);
}

// Pillow's Lanczos filter (Resample.c): sinc(x) sinc(x / 3) on [-3, 3).
function lanczos(x) {
  const sinc = (t) => (t === 0 ? 1 : Math.sin(Math.PI * t) / (Math.PI * t));
  return x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

// Pillow's precompute_coeffs: for each output pixel, the first input pixel and the normalized
// weights. Downscaling stretches the filter by the scale, which is what anti-aliases.
function lanczosCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 3 * filterScale;
  const taps = [];
  for (let out = 0; out < outSize; out++) {
    const centre = (out + 0.5) * scale;
    const first = Math.max(Math.trunc(centre - support + 0.5), 0);
    const end = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const weights = [];
    let total = 0;
    for (let x = first; x < end; x++) {
      const w = lanczos((x - centre + 0.5) / filterScale);
      weights.push(w);
      total += w;
    }
    taps.push({first, weights: weights.map((w) => (total !== 0 ? w / total : w))});
  }
  return taps;
}

// Image.resize(size, LANCZOS) of a float32 ("F" mode) image, as Pillow does it: a horizontal
// pass over the rows the vertical pass will read, then a vertical pass, each accumulated in
// double precision and stored as float32; a pass whose size does not change is skipped.
function resizeLanczos(image, height, width, outHeight, outWidth) {
  const vertical = lanczosCoefficients(height, outHeight);
  let rows = image;
  let rowOffset = 0;
  if (outWidth !== width) {
    const horizontal = lanczosCoefficients(width, outWidth);
    const first = vertical[0].first;
    const last = vertical[outHeight - 1].first + vertical[outHeight - 1].weights.length;
    rows = new Float32Array((last - first) * outWidth);
    for (let y = first; y < last; y++) {
      for (let x = 0; x < outWidth; x++) {
        const tap = horizontal[x];
        let sum = 0;
        for (let i = 0; i < tap.weights.length; i++) {
          sum += image[y * width + tap.first + i] * tap.weights[i];
        }
        rows[(y - first) * outWidth + x] = sum;
      }
    }
    rowOffset = first;
  }
  if (outHeight === height) return rows;
  const out = new Float32Array(outHeight * outWidth);
  for (let y = 0; y < outHeight; y++) {
    const tap = vertical[y];
    for (let x = 0; x < outWidth; x++) {
      let sum = 0;
      for (let i = 0; i < tap.weights.length; i++) {
        sum += rows[(tap.first - rowOffset + i) * outWidth + x] * tap.weights[i];
      }
      out[y * outWidth + x] = sum;
    }
  }
  return out;
}

// images.mnist_like: a grey image (height x width, values in [0, 1], either polarity) to the
// recipe's side x side digit, ink bright on black; null if the image is blank.
function mnistLike(grey, height, width, recipe) {
  const border = [];
  for (let c = 0; c < width; c++) border.push(grey[c], grey[(height - 1) * width + c]);
  for (let r = 0; r < height; r++) border.push(grey[r * width], grey[r * width + width - 1]);
  let background = median(border);
  const ink = new Float32Array(grey.length);
  for (let i = 0; i < grey.length; i++) ink[i] = background > 0.5 ? f32(1 - grey[i]) : grey[i];
  background = Math.min(background, 1 - background);
  let peak = -Infinity;
  for (let i = 0; i < ink.length; i++) peak = Math.max(peak, ink[i]);
  const span = peak - background;
  if (span <= recipe.ink_threshold) return null;
  // NumPy takes the Python floats background, span and threshold as float32 here.
  const background32 = f32(background);
  const span32 = f32(span);
  const threshold32 = f32(recipe.ink_threshold);
  let top = height, bottom = -1, left = width, right = -1;
  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) {
      const i = r * width + c;
      ink[i] = Math.min(Math.max(f32(f32(ink[i] - background32) / span32), 0), 1);
      if (ink[i] > threshold32) {
        top = Math.min(top, r); bottom = Math.max(bottom, r);
        left = Math.min(left, c); right = Math.max(right, c);
      }
    }
  }
  const cropHeight = bottom - top + 1, cropWidth = right - left + 1;
  const crop = new Float32Array(cropHeight * cropWidth);
  for (let r = 0; r < cropHeight; r++) {
    for (let c = 0; c < cropWidth; c++) crop[r * cropWidth + c] = ink[(top + r) * width + left + c];
  }
  const scale = recipe.box / Math.max(cropHeight, cropWidth);
  const outWidth = Math.max(1, roundHalfEven(cropWidth * scale));
  const outHeight = Math.max(1, roundHalfEven(cropHeight * scale));
  const digit = resizeLanczos(crop, cropHeight, cropWidth, outHeight, outWidth);
  for (let i = 0; i < digit.length; i++) digit[i] = Math.min(Math.max(digit[i], 0), 1);
  return centreByMass(digit, outHeight, outWidth, recipe);
}

// images._centre_by_mass: the digit placed in the field with its centre of mass at the centre.
function centreByMass(digit, height, width, recipe) {
  let total = 0, rowMoment = 0, colMoment = 0;
  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) {
      const v = digit[r * width + c];
      total += v; rowMoment += r * v; colMoment += c * v;
    }
  }
  const cy = total === 0 ? (height - 1) / 2 : rowMoment / total;
  const cx = total === 0 ? (width - 1) / 2 : colMoment / total;
  const side = recipe.side;
  const top = Math.min(Math.max(roundHalfEven(recipe.centre - cy), 0), side - height);
  const left = Math.min(Math.max(roundHalfEven(recipe.centre - cx), 0), side - width);
  const field = new Float32Array(side * side);
  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) field[(top + r) * side + left + c] = digit[r * width + c];
  }
  return field;
}

// preprocess.deskew of one side x side image: the shear that makes the ink's principal axis
// vertical, with its centre of mass at the centre, interpolated bilinearly (zeros outside).
// Output pixel (r, c) samples the input at (r0 + r - m, c0 + c - m + alpha (r - m)), done as
// NumPy does it: a blend of two source rows, then a fractional shift of the blended row.
function deskew(image, side) {
  const m = (side - 1) / 2;
  let total = 0, rowMoment = 0, colMoment = 0, rowSquare = 0, cross = 0;
  for (let r = 0; r < side; r++) {
    for (let c = 0; c < side; c++) {
      const v = Math.max(image[r * side + c], 0);
      total += v; rowMoment += r * v; colMoment += c * v;
      rowSquare += r * r * v; cross += r * c * v;
    }
  }
  const hasInk = total > 0;
  const r0 = hasInk ? rowMoment / total : m;
  const c0 = hasInk ? colMoment / total : m;
  const varR = (hasInk ? rowSquare / total : 0) - r0 * r0;
  const covRC = (hasInk ? cross / total : 0) - r0 * c0;
  const alpha = hasInk && varR > 1e-9 ? covRC / varR : 0;
  const pixel = (r, c) => (r >= 0 && r < side && c >= 0 && c < side ? image[r * side + c] : 0);

  const shiftR = r0 - m;
  const baseR = Math.floor(shiftR);
  const fracR = f32(shiftR - baseR);
  const out = new Float32Array(side * side);
  const blended = new Float32Array(side + 2);   // columns -1 .. side
  for (let r = 0; r < side; r++) {
    for (let c = -1; c <= side; c++) {
      const upper = pixel(r + baseR, c);
      blended[c + 1] = f32(upper + f32(fracR * f32(pixel(r + baseR + 1, c) - upper)));
    }
    const limit = side + 1;
    const shiftC = Math.min(Math.max(c0 - m + alpha * (r - m), -limit), limit);
    const baseC = Math.floor(shiftC);
    const fracC = f32(shiftC - baseC);
    const sample = (c) => (c >= -1 && c <= side ? blended[c + 1] : 0);
    for (let c = 0; c < side; c++) {
      const left = sample(c + baseC);
      out[r * side + c] = f32(left + f32(fracC * f32(sample(c + baseC + 1) - left)));
    }
  }
  return out;
}

// The pixels the weights see: the model's preprocessing applied to its input.
function preprocess(pixels) {
  return DATA.preprocessing === "deskew" ? deskew(pixels, SIDE) : pixels;
}

// --- 3. the model -------------------------------------------------------------------------------

// scores_c = w_c . x + b_c, for every class c.
function scores(model, x) {
  return CLASSES.map((_, k) => {
    let sum = model.bias[k];
    for (let i = 0; i < N_PIXELS; i++) sum += model.weights[k * N_PIXELS + i] * x[i];
    return sum;
  });
}

// The softmax, with the largest score subtracted so that no exponential overflows.
function softmax(values) {
  const top = Math.max(...values);
  const exps = values.map((v) => Math.exp(v - top));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

// What each pixel adds to the score of class k against the mean training image:
// w_k * (x - mean). Every pixel counts: ink where the average digit has little, and missing
// ink where it has much (the missing loop that rules out an 8). The sum of the map is
// score_k(x) - score_k(mean).
function contributions(model, k, x) {
  const out = new Float64Array(N_PIXELS);
  for (let i = 0; i < N_PIXELS; i++) {
    out[i] = model.weights[k * N_PIXELS + i] * (x[i] - MEAN_IMAGE[i]);
  }
  return out;
}

// --- 4. the page --------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const percent = (p, digits = 1) => `${(100 * p).toFixed(digits)}%`;

// "a 3", "an 8", "an 11", "an Ankle boot": the article a class name takes when read aloud.
function withArticle(name) {
  const vowelSound = /^(8|11|18)(\D|$)|^8\d|^[aeiou]/i.test(name);
  return `${vowelSound ? "an" : "a"} ${name}`;
}
// Rounded down, so that a confidence short of certainty never shows as 100%.
const percentBelow = (p) => `${(Math.floor(1000 * p) / 10).toFixed(1)}%`;

// matplotlib's RdBu (ColorBrewer's 11 classes): red for negative, blue for positive.
const RDBU = [[103, 0, 31], [178, 24, 43], [214, 96, 77], [244, 165, 130], [253, 219, 199],
  [247, 247, 247], [209, 229, 240], [146, 197, 222], [67, 147, 195], [33, 102, 172],
  [5, 48, 97]];

function diverging(value, limit) {
  const t = (Math.min(Math.max(value / limit, -1), 1) + 1) / 2 * (RDBU.length - 1);
  const i = Math.min(Math.floor(t), RDBU.length - 2);
  const u = t - i;
  return RDBU[i].map((a, j) => Math.round(a + u * (RDBU[i + 1][j] - a)));
}

// A canvas of side x side pixels (CSS scales it up, pixelated), coloured by colourOf(value).
function paint(canvas, values, colourOf) {
  canvas.width = SIDE;
  canvas.height = SIDE;
  const context = canvas.getContext("2d");
  const image = context.createImageData(SIDE, SIDE);
  for (let i = 0; i < N_PIXELS; i++) {
    const [r, g, b] = colourOf(values[i]);
    image.data.set([r, g, b, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

// Ink dark on white paper, as the report's figures draw pixels.
const inkColour = (v) => {
  const level = Math.round(255 * (1 - Math.min(Math.max(v, 0), 1)));
  return [level, level, level];
};

function paintInk(canvas, pixels) { paint(canvas, pixels, inkColour); }

function paintWeights(canvas, values, limit) {
  paint(canvas, values, (v) => diverging(v, limit));
}

function pixelCanvas(className) {
  const canvas = element("canvas", `pixels ${className || ""}`.trim());
  canvas.width = SIDE;
  canvas.height = SIDE;
  return canvas;
}

// --- the drawing pad

const pad = $("pad");
const padContext = pad.getContext("2d", {willReadFrequently: true});
// The pen's width in pad pixels: a digit drawn 200 pixels tall is scaled by 20 / 200 into
// MNIST's box, so its strokes come out 2 pixels wide, as MNIST's are.
const PEN_WIDTH = pad.width / 14;

// What the page shows: a drawing, or a test image (fed to the model as it is, as `fastlr
// predict` takes a .npy array), with the pixels the model read and its answer.
let current = {source: "empty"};

function clearPad() {
  padContext.fillStyle = "#fff";
  padContext.fillRect(0, 0, pad.width, pad.height);
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

function padGrey() {
  const rgba = padContext.getImageData(0, 0, pad.width, pad.height).data;
  const grey = new Float32Array(pad.width * pad.height);
  // The pad is grey (R = G = B), so Pillow's convert("L") gives R itself.
  for (let i = 0; i < grey.length; i++) grey[i] = f32(rgba[4 * i] / 255);
  return grey;
}

let pen = null;
let updatePending = false;

function scheduleUpdate() {
  if (updatePending) return;
  updatePending = true;
  requestAnimationFrame(() => {
    updatePending = false;
    readDrawing();
  });
}

function startStroke(event) {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  pen = padPoint(event);
  padContext.fillStyle = "#000";
  padContext.beginPath();
  padContext.arc(pen[0], pen[1], PEN_WIDTH / 2, 0, 2 * Math.PI);
  padContext.fill();
  current = {source: "drawing"};
  scheduleUpdate();
}

function continueStroke(event) {
  if (!pen) return;
  event.preventDefault();
  const next = padPoint(event);
  padContext.strokeStyle = "#000";
  padContext.lineWidth = PEN_WIDTH;
  padContext.lineCap = "round";
  padContext.lineJoin = "round";
  padContext.beginPath();
  padContext.moveTo(pen[0], pen[1]);
  padContext.lineTo(next[0], next[1]);
  padContext.stroke();
  pen = next;
  scheduleUpdate();
}

function endStroke() {
  if (!pen) return;
  pen = null;
  scheduleUpdate();
}

function readDrawing() {
  if (current.source !== "drawing") return;
  const pixels = mnistLike(padGrey(), pad.height, pad.width, DATA.drawing);
  show(pixels ? {source: "drawing", pixels} : {source: "drawing"});
}

// Test image k of the gallery: drawn on the pad (so one can draw over it) and read as it is.
function loadMistake(k) {
  const pixels = mistakePixels(k);
  const small = pixelCanvas();
  paintInk(small, pixels);
  clearPad();
  padContext.imageSmoothingEnabled = false;   // its pixels as they are
  padContext.drawImage(small, 0, 0, pad.width, pad.height);
  show({source: "test", mistake: k, pixels});
  $("draw-section").scrollIntoView({behavior: "smooth", block: "start"});
}

// --- showing an input

function show(state) {
  current = state;
  if (state.pixels) {
    state.seen = preprocess(state.pixels);
    state.scores = scores(MODEL, state.seen);
    state.probabilities = softmax(state.scores);
    const order = state.probabilities.map((_, k) => k)
      .sort((a, b) => state.probabilities[b] - state.probabilities[a] || a - b);
    state.top = order[0];
    // The class to compare with: a loaded test image's true class when the model got it
    // wrong, else the runner-up.
    const truth = state.source === "test" ? MISTAKES.true[state.mistake] : order[0];
    state.second = truth !== order[0] ? truth : order[1];
  }
  showInput(state);
  showProbabilities(state);
  showMaps(state);
}

function showInput(state) {
  const blank = new Float32Array(N_PIXELS);
  paintInk($("input"), state.pixels || blank);
  if (DATA.preprocessing === "deskew") paintInk($("deskewed"), state.seen || blank);
  const verdict = $("verdict");
  verdict.className = "";
  if (!state.pixels) {
    verdict.textContent = DATA.drawing ? "Draw a digit in the box." :
      "Click a test image below to see how the model reads it.";
    $("source").textContent = "";
    return;
  }
  const answer = CLASSES[state.top];
  const p = percent(state.probabilities[state.top]);
  if (state.source === "test") {
    const k = state.mistake;
    const truth = CLASSES[MISTAKES.true[k]];
    verdict.className = answer === truth ? "right" : "wrong";
    verdict.textContent = `Test image #${MISTAKES.index[k]} is ${withArticle(truth)}; the ` +
      `model reads ${withArticle(answer)} (${p}).`;
    $("source").textContent = `test image #${MISTAKES.index[k]}, as the model reads it`;
  } else {
    verdict.textContent = `The model reads ${withArticle(answer)} (${p}).`;
    $("source").textContent = "your drawing";
  }
}

function showProbabilities(state) {
  for (const [k, row] of probabilityRows.entries()) {
    const p = state.probabilities ? state.probabilities[k] : 0;
    row.dataset.probability = state.probabilities ? String(p) : "";
    row.classList.toggle("top", state.probabilities !== undefined && k === state.top);
    row.querySelector(".bar").style.width = percent(p, 2);
    row.querySelector(".value").textContent = state.probabilities ? percent(p) : "";
  }
}

const probabilityRows = CLASSES.map((name) => {
  const row = element("li");
  row.dataset.class = name;
  row.append(element("span", "label", name));
  const track = element("span", "track");
  track.append(element("span", "bar"));
  row.append(track, element("span", "value"));
  $("probabilities").append(row);
  return row;
});

function showMaps(state) {
  const maps = $("maps");
  maps.replaceChildren();
  if (!state.pixels) {
    maps.append(element("p", "placeholder",
      "Draw a digit (or click a test image) to see which pixels vote for which class."));
    return;
  }
  const [a, b] = [state.top, state.second];
  const votesA = contributions(MODEL, a, state.seen);
  const votesB = contributions(MODEL, b, state.seen);
  const difference = votesA.map((v, i) => v - votesB[i]);
  // One colour scale for the three maps, so that their colours compare; it saturates at the
  // 95th percentile of the votes, so that a few strong pixels do not wash out the rest.
  const votes = [...votesA, ...votesB, ...difference].map(Math.abs).filter((v) => v > 0)
    .sort((u, v) => u - v);
  const limit = votes.length ? votes[Math.floor(0.95 * (votes.length - 1))] : 1;
  const sum = (values) => values.reduce((s, v) => s + v, 0);
  const atMean = scores(MODEL, MEAN_IMAGE);
  const vsWord = state.source === "test" && b === MISTAKES.true[state.mistake] ?
    "the true class" : "the runner-up";
  const panels = [
    [votesA, `votes for ${CLASSES[a]}`,
      `score ${state.scores[a].toFixed(2)} = pixels ${sum(votesA).toFixed(2)} + score of ` +
      `the mean image ${atMean[a].toFixed(2)}`],
    [votesB, `votes for ${CLASSES[b]} (${vsWord})`,
      `score ${state.scores[b].toFixed(2)} = pixels ${sum(votesB).toFixed(2)} + score of ` +
      `the mean image ${atMean[b].toFixed(2)}`],
    [difference, `${CLASSES[a]} rather than ${CLASSES[b]}`,
      `score difference ${(state.scores[a] - state.scores[b]).toFixed(2)}`],
  ];
  for (const [values, title, detail] of panels) {
    const figure = element("figure", "map");
    const canvas = pixelCanvas("large");
    paintWeights(canvas, values, limit);
    const caption = element("figcaption");
    caption.append(element("strong", "", title), element("br"), detail);
    figure.append(canvas, caption);
    maps.append(figure);
  }
}

// --- templates

function showTemplates(model, rowId, captionId, name) {
  const row = $(rowId);
  CLASSES.forEach((label, k) => {
    const figure = element("figure", "template");
    const canvas = pixelCanvas();
    paintWeights(canvas, model.weights.subarray(k * N_PIXELS, (k + 1) * N_PIXELS), model.limit);
    figure.append(canvas, element("figcaption", "", label));
    row.append(figure);
  });
  const caption = $(captionId);
  caption.append(element("strong", "", `${name}: ${percent(model.testAccuracy, 2)} `),
    `of the ${DATA.n_test.toLocaleString("en")} test images. `, model.description + ".");
}

// --- confusion matrix and mistakes

function showConfusion() {
  const table = $("confusion");
  const counts = DATA.confusion;
  let worst = 1;
  counts.forEach((row, i) => row.forEach((n, j) => { if (i !== j) worst = Math.max(worst, n); }));
  const head = element("tr");
  head.append(element("th", "corner", "true \\ read"));
  CLASSES.forEach((name) => head.append(element("th", "", name)));
  table.append(head);
  counts.forEach((row, i) => {
    const tr = element("tr");
    tr.append(element("th", "", CLASSES[i]));
    row.forEach((n, j) => {
      const cell = element("td", i === j ? "diagonal" : "", String(n));
      if (i !== j && n > 0) {
        const strength = n / worst;
        cell.style.background = `rgba(203, 24, 29, ${0.08 + 0.82 * strength})`;
        if (strength > 0.55) cell.classList.add("dark");
        cell.classList.add("clickable");
        cell.title = `${n} test images of ${CLASSES[i]} read as ${CLASSES[j]}`;
        cell.tabIndex = 0;
        cell.addEventListener("click", () => showGallery(i, j));
        cell.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") showGallery(i, j);
        });
      }
      tr.append(cell);
    });
    table.append(tr);
  });
}

// The most confident mistakes overall; or, for a cell, the kept mistakes of that cell.
const GALLERY_SIZE = 40;

function showGallery(trueClass, readClass) {
  const gallery = $("gallery");
  gallery.replaceChildren();
  const cell = trueClass !== undefined;
  const chosen = [];
  MISTAKES.index.forEach((_, k) => {
    if (!cell || (MISTAKES.true[k] === trueClass && MISTAKES.predicted[k] === readClass)) {
      chosen.push(k);
    }
  });
  const shown = cell ? chosen : chosen.slice(0, GALLERY_SIZE);
  for (const k of shown) {
    const button = element("button", "mistake");
    button.type = "button";
    button.dataset.mistake = String(k);
    button.title = `test image #${MISTAKES.index[k]}: click to load it into the pad`;
    const canvas = pixelCanvas();
    paintInk(canvas, mistakePixels(k));
    button.append(canvas, element("span", "",
      `${CLASSES[MISTAKES.true[k]]}→${CLASSES[MISTAKES.predicted[k]]} ` +
      `${percentBelow(MISTAKES.confidence[k])}`));
    button.addEventListener("click", () => loadMistake(k));
    gallery.append(button);
  }
  const total = cell ? DATA.confusion[trueClass][readClass] : MISTAKES.total;
  let title;
  if (total === 0) {
    title = "The model reads every test image right.";
  } else if (cell) {
    title = `${CLASSES[trueClass]} read as ${CLASSES[readClass]}: ${shown.length} of ` +
      `${total} test images, the most confident first.`;
  } else {
    title = `The ${shown.length} most confident of the ${total.toLocaleString("en")} ` +
      `mistakes on the test set. Click a cell of the matrix for one kind of mistake.`;
  }
  $("gallery-title").textContent = title;
  $("all-mistakes").hidden = !cell;
}

// --- start

function start() {
  $("title").textContent = DATA.heading;
  $("summary").textContent = `A linear model: one weight per pixel and class ` +
    `(${CLASSES.length} classes × ${N_PIXELS} pixels, ${SIDE}×${SIDE}) and one bias per class. ` +
    `It reads ${percent(MODEL.testAccuracy, 2)} of the ${DATA.n_test.toLocaleString("en")} ` +
    `test images right${DATA.preprocessing === "deskew" ? ", after deskewing each image" : ""}.`;
  $("deskewed-figure").hidden = DATA.preprocessing !== "deskew";
  if (DATA.drawing) {
    pad.addEventListener("pointerdown", startStroke);
    pad.addEventListener("pointermove", continueStroke);
    pad.addEventListener("pointerup", endStroke);
    pad.addEventListener("pointercancel", endStroke);
  } else {
    $("draw-heading").textContent = "Read a test image";
    $("drawing-note").hidden = true;
    $("no-drawing").hidden = false;
    pad.classList.add("disabled");
  }
  $("clear").addEventListener("click", () => { clearPad(); show({source: "empty"}); });
  $("all-mistakes").addEventListener("click", () => showGallery());
  showTemplates(MODEL, "model-weights", "model-caption", "this model");
  showTemplates(COMPARE, "compare-weights", "compare-caption", `with L2 ${COMPARE.l2}`);
  const change = 100 * (COMPARE.testAccuracy - MODEL.testAccuracy);
  $("compare-caption").append(` Against this model: ${change < 0 ? "−" : "+"}` +
    `${Math.abs(change).toFixed(2)} points of test accuracy.`);
  showConfusion();
  showGallery();
  $("footer").textContent = `Written by fastlr ${DATA.fastlr_version}. One file, no network: ` +
    `the model runs in this page.`;
  clearPad();
  show({source: "empty"});
}

// For scripts and tests: what the page shows now, as plain numbers.
window.fastlrPage = {
  current: () => ({
    source: current.source,
    label: current.pixels ? CLASSES[current.top] : null,
    pixels: current.pixels ? Array.from(current.pixels) : null,
    seen: current.seen ? Array.from(current.seen) : null,
    probabilities: current.probabilities || null,
  }),
};

start();
