// Drawing annotation marks on a canvas laid over a screen-share video, for
// the live lesson page (lesson-annotate.js) and the replay page (replay.js).
// A mark's points are fixed-point fractions of the shared picture (0 to
// SCALE across its width and down its height), so a mark stays on the
// content at any window size. This module only draws: what is drawn, and
// who may see it, the server has already decided.

// `COORD_SCALE` in protocol/src/annotation.rs.
export const SCALE = 10000;

// The rectangle (CSS pixels, in the element's box) where a video shown with
// `object-fit: contain` actually shows its picture.
export function contentRect(video, boxW, boxH) {
  const vw = video?.videoWidth || 0;
  const vh = video?.videoHeight || 0;
  if (!vw || !vh || !boxW || !boxH) return { x: 0, y: 0, w: boxW, h: boxH };
  const scale = Math.min(boxW / vw, boxH / vh);
  const w = vw * scale;
  const h = vh * scale;
  return { x: (boxW - w) / 2, y: (boxH - h) / 2, w, h };
}

// Sizes `canvas` to its box (at the device's pixel ratio) and returns the
// picture's rectangle in canvas pixels.
export function fit(canvas, video) {
  const boxW = canvas.clientWidth;
  const boxH = canvas.clientHeight;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(boxW * dpr));
  const h = Math.max(1, Math.round(boxH * dpr));
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const r = contentRect(video, boxW, boxH);
  return { x: r.x * dpr, y: r.y * dpr, w: r.w * dpr, h: r.h * dpr };
}

// A point of the picture in canvas pixels.
function at(rect, [x, y]) {
  return [rect.x + (x / SCALE) * rect.w, rect.y + (y / SCALE) * rect.h];
}

// Draws one mark. `fade` (0..1) dims a laser flash as it goes.
export function drawMark(g, stroke, rect, fade = 1) {
  const pts = (stroke.points || []).map(p => at(rect, p));
  if (!pts.length) return;
  const px = Math.max(1, (stroke.width / SCALE) * rect.w);
  g.save();
  g.strokeStyle = stroke.colour;
  g.fillStyle = stroke.colour;
  g.lineWidth = px;
  g.lineCap = 'round';
  g.lineJoin = 'round';
  const line = () => {
    g.beginPath();
    g.moveTo(...pts[0]);
    for (const p of pts.slice(1)) g.lineTo(...p);
    if (pts.length === 1) g.lineTo(pts[0][0] + 0.01, pts[0][1]);
    g.stroke();
  };
  switch (stroke.tool) {
    case 'pen': line(); break;
    case 'highlighter': g.globalAlpha = 0.4; line(); break;
    case 'line': line(); break;
    case 'arrow': {
      line();
      const [a, b] = [pts[0], pts[pts.length - 1]];
      const angle = Math.atan2(b[1] - a[1], b[0] - a[0]);
      const head = Math.max(8, px * 4);
      g.beginPath();
      g.moveTo(...b);
      g.lineTo(b[0] - head * Math.cos(angle - 0.45), b[1] - head * Math.sin(angle - 0.45));
      g.lineTo(b[0] - head * Math.cos(angle + 0.45), b[1] - head * Math.sin(angle + 0.45));
      g.closePath();
      g.fill();
      break;
    }
    case 'rectangle': {
      const [a, b] = [pts[0], pts[1] || pts[0]];
      g.strokeRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
      break;
    }
    case 'ellipse': {
      const [a, b] = [pts[0], pts[1] || pts[0]];
      g.beginPath();
      g.ellipse((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, Math.abs(b[0] - a[0]) / 2, Math.abs(b[1] - a[1]) / 2, 0, 0, 2 * Math.PI);
      g.stroke();
      break;
    }
    case 'text':
      g.font = `${Math.max(10, px)}px system-ui, sans-serif`;
      g.textBaseline = 'top';
      g.fillText(stroke.text || '', ...pts[0]);
      break;
    case 'laser':
      g.globalAlpha = Math.max(0, fade);
      for (const p of pts) {
        g.beginPath();
        g.arc(p[0], p[1], Math.max(6, px), 0, 2 * Math.PI);
        g.fill();
      }
      break;
    default: break;
  }
  g.restore();
}

// How long a laser flash stays, fading, in milliseconds.
export const LASER_MS = 1500;

// Clears `canvas` and draws `marks` (with `lasers`: [{stroke, at}] faded by
// `now`) over the picture of `video`.
export function paint(canvas, video, marks, lasers = [], now = 0) {
  const rect = fit(canvas, video);
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  for (const m of marks) drawMark(g, m, rect);
  for (const l of lasers) drawMark(g, l.stroke, rect, 1 - (now - l.at) / LASER_MS);
}

// The colour drawn at a point of the picture (x, y from 0 to SCALE), as
// [r, g, b, a]: what the browser tests check.
export function pixelAt(canvas, video, x, y) {
  const rect = fit(canvas, video);
  const [cx, cy] = at(rect, [x, y]);
  return [...canvas.getContext('2d').getImageData(Math.round(cx), Math.round(cy), 1, 1).data];
}
