// Annotation on the live lesson page: the marks the server sent (and
// nothing else), drawn on a canvas over each shared screen on the stage;
// the tools (pen, highlighter, line, arrow, rectangle, ellipse, text,
// laser, eraser of one's own marks, colour, width, undo, redo; for staff,
// clear all or one person's, and "isolated"); and the pointer turned into
// protocol messages. A freehand stroke goes out as a `draw` and then
// `extend_mark`s every 150 ms; a laser flash at most every 200 ms. The
// server decides who may draw and who sees what: a mark this page draws
// is one the server sent it. A tool it hides is still refused by the
// gateway.

import { ask, attr, el, reconcile, text } from './common.js';
import { ClientMsg } from './lesson-signal.js';
import { LASER_MS, SCALE, paint, pixelAt } from './annotate.js';

const TOOLS = [
  ['pen', 'Pen'], ['highlighter', 'Highlighter'], ['line', 'Line'], ['arrow', 'Arrow'],
  ['rectangle', 'Box'], ['ellipse', 'Circle'], ['text', 'Text'], ['laser', 'Pointer'], ['eraser', 'Eraser'],
];
const WIDTHS = [['20', 'Thin'], ['50', 'Medium'], ['100', 'Thick']];
const EXTEND_MS = 150;
const LASER_EVERY_MS = 200;
// `MAX_POINTS` in protocol/src/annotation.rs, with room to spare.
const MAX_POINTS = 1900;

export class Annotations {
  constructor(lesson) {
    this.lesson = lesson;
    this.marks = new Map(); // id -> mark, as the server sent it
    this.lasers = [];
    this.layers = new Map(); // layer id -> { canvas, video }
    this.tool = null;
    this.colour = '#e01b24';
    this.width = '50';
    this.stroke = null; // the freehand stroke being drawn
    this.tools = this.buildTools();
  }

  // A rejoin starts from nothing: the server sends what is shown now.
  reset() {
    this.marks.clear();
    this.lasers = [];
    this.endStroke();
    this.repaint();
  }

  // Whether this person may draw (the server checks again).
  mayDraw() {
    const l = this.lesson;
    return l.state === 'admitted' && (l.isStaff() || !!l.me.permissions.annotate);
  }

  // The gateway's annotation messages; false for any other.
  handle(tag, body) {
    switch (tag) {
      case 'mark':
        if (body.stroke.tool === 'laser') {
          this.lasers.push({ layer: body.layer, stroke: body.stroke, at: performance.now() });
          this.animate();
        } else {
          this.marks.set(body.id, body);
        }
        break;
      case 'mark_extended': {
        const m = this.marks.get(body.id);
        if (m) m.stroke.points.push(...body.points);
        break;
      }
      case 'unmark':
        for (const id of body.ids) this.marks.delete(id);
        break;
      default:
        return false;
    }
    this.repaint();
    return true;
  }

  // The permission went: a stroke being drawn ends here (the server
  // already refuses the rest of it).
  revoked() {
    this.endStroke();
    this.tool = null;
  }

  // ------------------------------------------------------------ drawing

  // Puts (or keeps) the overlay on a screen tile showing `layer`'s share.
  overlay(tile, layer) {
    let canvas = tile.querySelector('canvas.annotation-layer');
    if (!canvas) {
      canvas = el('canvas', { class: 'annotation-layer', 'data-layer': String(layer), 'aria-hidden': 'true' });
      tile.append(canvas);
      this.listen(canvas, layer);
      new ResizeObserver(() => this.repaint()).observe(tile);
    }
    const video = tile.querySelector('video');
    if (video && !video.annotated) {
      video.annotated = true;
      video.addEventListener('resize', () => this.repaint());
    }
    this.layers.set(layer, { canvas, video, tile });
    canvas.classList.toggle('drawing', !!this.tool && this.mayDraw());
    this.paintLayer(layer);
  }

  paintLayer(layer) {
    const l = this.layers.get(layer);
    if (!l || !l.canvas.isConnected) return;
    const marks = [...this.marks.values()].filter(m => m.layer === layer).map(m => m.stroke);
    const now = performance.now();
    paint(l.canvas, l.tile.querySelector('video'), marks, this.lasers.filter(x => x.layer === layer), now);
  }

  repaint() {
    for (const [layer, l] of this.layers) {
      if (!l.canvas.isConnected) this.layers.delete(layer);
      else this.paintLayer(layer);
    }
  }

  animate() {
    if (this.animating) return;
    this.animating = true;
    const frame = () => {
      const now = performance.now();
      this.lasers = this.lasers.filter(l => now - l.at < LASER_MS);
      this.repaint();
      if (this.lasers.length) requestAnimationFrame(frame);
      else this.animating = false;
    };
    requestAnimationFrame(frame);
  }

  // The colour at a point of `layer`'s overlay ([r, g, b, a]; browser tests).
  pixel(layer, x, y) {
    const l = this.layers.get(layer);
    return l ? pixelAt(l.canvas, l.tile.querySelector('video'), x, y) : null;
  }

  // ------------------------------------------------------------ input

  // A pointer position as a point of the shared picture.
  point(canvas, ev) {
    const box = canvas.getBoundingClientRect();
    const video = canvas.parentElement.querySelector('video');
    const vw = video?.videoWidth || 0;
    const vh = video?.videoHeight || 0;
    let r = { x: 0, y: 0, w: box.width, h: box.height };
    if (vw && vh) {
      const s = Math.min(box.width / vw, box.height / vh);
      r = { x: (box.width - vw * s) / 2, y: (box.height - vh * s) / 2, w: vw * s, h: vh * s };
    }
    const clamp = v => Math.max(0, Math.min(SCALE, Math.round(v * SCALE)));
    return [clamp((ev.clientX - box.left - r.x) / r.w), clamp((ev.clientY - box.top - r.y) / r.h)];
  }

  look(tool) {
    const width = Number(this.width);
    return { tool, colour: this.colour, width: tool === 'highlighter' ? Math.min(500, width * 3) : width };
  }

  listen(canvas, layer) {
    const send = m => this.lesson.send(m);
    canvas.addEventListener('pointerdown', async ev => {
      if (!this.tool || !this.mayDraw()) return;
      ev.preventDefault();
      canvas.setPointerCapture?.(ev.pointerId);
      const p = this.point(canvas, ev);
      const tool = this.tool;
      if (tool === 'pen' || tool === 'highlighter') {
        send(ClientMsg.draw(layer, { ...this.look(tool), points: [p] }));
        this.stroke = { layer, pending: [], count: 1, timer: setInterval(() => this.flush(), EXTEND_MS) };
      } else if (tool === 'eraser') {
        const mine = this.nearestOwn(layer, p);
        if (mine !== null) send(ClientMsg.eraseMark(mine));
      } else if (tool === 'text') {
        const words = await ask({ title: 'Add a label', field: { label: 'Text' }, confirm: 'Add' });
        if (words) send(ClientMsg.draw(layer, { ...this.look(tool), width: Number(this.width) * 4, points: [p], text: words }));
      } else if (tool !== 'laser') {
        this.shape = { layer, tool, start: p };
      }
    });
    canvas.addEventListener('pointermove', ev => {
      if (!this.tool || !this.mayDraw()) return;
      const p = this.point(canvas, ev);
      if (this.stroke && this.stroke.layer === layer && this.stroke.count < MAX_POINTS) {
        const last = this.stroke.pending[this.stroke.pending.length - 1];
        if (!last || last[0] !== p[0] || last[1] !== p[1]) {
          this.stroke.pending.push(p);
          this.stroke.count += 1;
        }
      } else if (this.tool === 'laser') {
        const now = performance.now();
        if (!this.laserAt || now - this.laserAt >= LASER_EVERY_MS) {
          this.laserAt = now;
          send(ClientMsg.draw(layer, { ...this.look('laser'), points: [p] }));
        }
      }
    });
    const up = ev => {
      if (this.stroke) this.endStroke();
      if (this.shape && this.shape.layer === layer) {
        const { tool, start } = this.shape;
        this.shape = null;
        if (this.mayDraw()) send(ClientMsg.draw(layer, { ...this.look(tool), points: [start, this.point(canvas, ev)] }));
      }
    };
    canvas.addEventListener('pointerup', up);
    canvas.addEventListener('pointercancel', () => { this.endStroke(); this.shape = null; });
  }

  flush() {
    const s = this.stroke;
    if (!s || !s.pending.length) return;
    if (!this.mayDraw()) return this.endStroke();
    this.lesson.send(ClientMsg.extendMark(s.pending));
    s.pending = [];
  }

  endStroke() {
    if (!this.stroke) return;
    if (this.mayDraw()) this.flush();
    clearInterval(this.stroke.timer);
    this.stroke = null;
  }

  // One's own mark nearest `p` on `layer` (within 3 % of the picture), or null.
  nearestOwn(layer, p) {
    let best = null;
    let bestD = (SCALE * 0.03) ** 2;
    for (const m of this.marks.values()) {
      if (m.layer !== layer || !m.mine) continue;
      for (const q of m.stroke.points) {
        const d = (q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2;
        if (d <= bestD) { bestD = d; best = m.id; }
      }
    }
    return best;
  }

  // ------------------------------------------------------------ tools

  buildTools() {
    const pick = tool => { this.tool = this.tool === tool ? null : tool; this.lesson.render(); };
    const b = (id, label, onclick, attrs = {}) => el('button', { id, type: 'button', class: 'tool small', onclick, ...attrs }, label);
    const t = {
      tools: TOOLS.map(([tool, label]) => b(`annotate-${tool}`, label, () => pick(tool), { 'data-tool': tool, 'aria-pressed': 'false' })),
      colour: el('input', { id: 'annotation-colour', type: 'color', value: this.colour, 'aria-label': 'Colour', oninput: ev => { this.colour = ev.target.value; } }),
      width: el('select', { id: 'annotation-width', 'aria-label': 'Line width', onchange: ev => { this.width = ev.target.value; } },
        ...WIDTHS.map(([v, label]) => el('option', { value: v, selected: v === this.width }, label))),
      undo: b('annotation-undo', 'Undo', () => this.lesson.send(ClientMsg.undoMark())),
      redo: b('annotation-redo', 'Redo', () => this.lesson.send(ClientMsg.redoMark())),
      clearWho: el('select', { id: 'annotation-clear-who', 'aria-label': 'Whose marks to clear' }),
      clear: b('annotation-clear', 'Clear', () => {
        const who = t.clearWho.value;
        this.lesson.send(ClientMsg.clearMarks(who === 'all' ? undefined : Number(who)));
      }),
      isolated: el('input', { id: 'annotation-isolated', type: 'checkbox', onchange: ev => this.lesson.send(ClientMsg.isolateMarks(ev.target.checked)) }),
    };
    t.isolatedLabel = el('label', { id: 'annotation-isolated-label', class: 'toggle' }, t.isolated, ' Pupils see only staff marks and their own');
    t.bar = el('div', { id: 'annotation-tools', class: 'annotation-tools', role: 'toolbar', 'aria-label': 'Drawing on the shared screen', hidden: true });
    return t;
  }

  // The tool bar, shown while a shared screen is on the stage and this
  // person may draw.
  renderTools(sharing) {
    const t = this.tools;
    const staff = this.lesson.isStaff();
    const may = sharing && this.mayDraw();
    t.bar.hidden = !may;
    if (!may) {
      this.tool = null;
      return;
    }
    for (const b of t.tools) {
      const on = b.dataset.tool === this.tool;
      attr(b, 'aria-pressed', String(on));
      b.classList.toggle('on', on);
    }
    const items = [...t.tools, t.colour, t.width, t.undo, t.redo];
    if (staff) {
      // One person's marks, by the name staff are shown, or everyone's.
      const authors = new Map();
      for (const m of this.marks.values()) authors.set(m.author, m.name || 'someone');
      reconcile(t.clearWho, [['all', 'Everyone'], ...[...authors].map(([h, n]) => [String(h), n])], o => o[0],
        o => el('option', { value: o[0] }), (e, o) => text(e, o[1] === 'Everyone' ? 'Everyone’s marks' : `${o[1]}’s marks`));
      t.isolated.checked = !!this.lesson.status?.marks_isolated;
      items.push(t.clearWho, t.clear, t.isolatedLabel);
    }
    reconcile(t.bar, items, e => e.id, e => e, () => {});
    for (const l of this.layers.values()) l.canvas.classList.toggle('drawing', !!this.tool);
  }
}
