// Chaperone's review pages: search and replay recordings (SLT, DSL), the
// DSL's incident list, and a pupil's review copies. Plain ES module, no
// build step. The gateway decides who may have a review token; the review
// service (same origin, under data-review-base) enforces its scope on every
// response. This page only asks and shows.
//
// body[data-replay-state]: reason | loading | ready | refused | error
// window.review: { detail, videos, seek(seconds), time() } for the tests.

import { api, el, request, showError, when } from './common.js';
import { LASER_MS, paint, pixelAt } from './annotate.js';

const root = document.getElementById('review');
const me = document.getElementById('me');
const base = me.dataset.reviewBase || '/review';
const roles = (me.dataset.roles || '').split(' ');
const isDsl = roles.includes('dsl');
const isLeader = isDsl || roles.includes('slt');
const isPupil = roles.includes('pupil');
const lessonId = me.dataset.lesson;
window.review = {};

function state(s, error) {
  document.body.dataset.replayState = s;
  if (error) document.body.dataset.lastError = error;
}
// A review token from the gateway, exchanged at once for the review cookie.
async function openReview(scope, lesson, reason) {
  const t = await api('/api/review/token', { scope, lesson: lesson || null, reason: reason || null });
  return api(`${t.review_base}/session`, { token: t.token });
}
const fmt = ms => { const s = Math.floor(ms / 1000); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`; };

// ---------------------------------------------------------------- the list
async function home() {
  root.replaceChildren();
  if (isLeader) {
    if (isDsl) root.append(await incidents());
    root.append(searchForm());
  } else if (isPupil) {
    try {
      await openReview('pupil_copy', null, null);
      const [list, lessons] = await Promise.all([api(`${base}/api/recordings`), api('/api/lessons').catch(() => [])]);
      root.append(el('h1', {}, 'My lessons to watch again'), recordingList(list, Object.fromEntries(lessons.map(l => [l.id, l]))));
      state('ready');
    } catch (e) {
      root.append(el('p', { class: 'muted', id: 'no-recordings' }, e.status === 404 ? 'No recorded lessons of your class yet.' : e.message));
      state('refused', e.code);
    }
  } else {
    root.append(el('p', { class: 'error', id: 'refused' }, 'Recordings are for senior leaders, the DSL and the pupils of a lesson\'s class.'));
    state('refused', 'forbidden');
  }
}

function searchForm() {
  const status = el('p', { class: 'muted', id: 'search-status' });
  const results = el('div', { id: 'results' });
  const form = el('form', { id: 'search' },
    el('label', {}, 'Reason for access (required) ', el('input', { name: 'reason', id: 'search-reason', required: '', maxlength: '500', size: '40' })),
    el('label', {}, 'Class ', el('input', { name: 'class', size: '6' })),
    el('label', {}, 'Teacher ', el('input', { name: 'teacher', size: '12' })),
    el('label', {}, 'Pupil present ', el('input', { name: 'pupil', size: '12' })),
    el('label', {}, 'From ', el('input', { name: 'from', type: 'date' })),
    el('label', {}, 'To ', el('input', { name: 'to', type: 'date' })),
    el('label', {}, el('input', { name: 'flagged', type: 'checkbox' }), ' with concerns or incidents'),
    el('button', { type: 'submit', id: 'search-go' }, 'Search recordings'), status);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    status.textContent = 'Searching…'; status.className = 'muted';
    try {
      await openReview('safeguarding', null, form.reason.value);
      const q = new URLSearchParams();
      if (form.teacher.value) q.set('teacher', form.teacher.value);
      if (form.pupil.value) q.set('pupil', form.pupil.value);
      if (form.from.value) q.set('from_ms', String(new Date(form.from.value).getTime()));
      if (form.to.value) q.set('to_ms', String(new Date(form.to.value).getTime() + 86400000));
      if (form.flagged.checked) q.set('flagged', 'true');
      const [list, lessons] = await Promise.all([api(`${base}/api/recordings?${q}`), api('/api/lessons').catch(() => [])]);
      const info = Object.fromEntries(lessons.map(l => [l.id, l]));
      const cls = form.class.value.trim().toLowerCase();
      const shown = cls ? list.filter(r => (info[r.lesson]?.class || '').toLowerCase() === cls) : list;
      results.replaceChildren(recordingList(shown, info));
      status.textContent = `${shown.length} recording(s). Your search is recorded in the audit log.`;
      state('ready');
    } catch (e) { showError(status, e); state('refused', e.code); }
  });
  return el('section', {}, el('h1', {}, 'Recordings'), form, results);
}

function recordingList(list, info) {
  if (list.length === 0) return el('p', { class: 'muted', id: 'no-recordings' }, 'No recordings found.');
  return el('ul', { class: 'lessons', id: 'recordings' }, ...list.map(r => el('li', { 'data-recording': r.lesson },
    el('a', { href: `/replay/${r.lesson}` }, info[r.lesson]?.title || `Lesson of ${when(r.start_ms)}`),
    ` — ${info[r.lesson] ? `class ${info[r.lesson].class}, ` : ''}${when(r.start_ms)}, ${fmt(r.duration_ms)}`,
    r.staff ? ` — ${r.staff.map(s => s.name || s).join(', ')}` : '',
    r.concerns || r.incidents ? el('span', { class: 'badge' }, ` ${r.concerns} concern(s), ${r.incidents} incident(s)`) : '',
    r.held ? el('span', { class: 'badge' }, ' legal hold') : '')));
}

async function incidents() {
  const box = el('section', { id: 'incidents' }, el('h1', {}, 'Concerns and incidents'));
  let rows = [];
  try { rows = await api('/api/incidents'); } catch (e) { box.append(el('p', { class: 'error' }, e.message)); return box; }
  if (rows.length === 0) { box.append(el('p', { class: 'muted' }, 'None.')); return box; }
  box.append(el('ul', { class: 'lessons' }, ...rows.map(({ incident: i, title, class: cls, replay }) => {
    const what = i.kind === 'concern' ? 'concern' : 'incident';
    const status = el('select', { 'data-status': i.id, 'aria-label': `Status of this ${what}` }, ...['open', 'referred', 'closed'].map(s => el('option', { value: s, ...(s === i.status ? { selected: '' } : {}) }, s)));
    const note = el('input', { placeholder: 'add a note', size: '30', 'data-note': i.id, 'aria-label': `Note on this ${what}` });
    const save = el('button', { type: 'button', onclick: async () => {
      await api(`/api/incidents/${i.id}`, { status: status.value, note: note.value || null });
      box.replaceWith(await incidents());
    } }, 'Save');
    save.setAttribute('aria-label', `Save the status and note of this ${what}`);
    const who = i.raised_by.name || 'someone in the lesson';
    return el('li', { 'data-incident': i.id },
      el('strong', {}, i.kind === 'concern' ? 'Concern' : 'Incident'), ` — ${title || 'a lesson'}${cls ? ` (${cls})` : ''}, ${when(i.at_ms)}, raised by ${who}: `,
      el('q', {}, i.text), ' ', el('a', { href: replay, 'data-open-replay': i.id }, 'open the replay here'), ' ', status, ' ', note, ' ', save,
      i.notes.length ? el('ul', {}, ...i.notes.map(n => el('li', { class: 'muted' }, `${when(n.at_ms)} ${n.by_name}: ${n.text}`))) : '');
  })));
  return box;
}

// ---------------------------------------------------------------- replay

let lessonInfo = null;
const SCOPE = { safeguarding: 'Safeguarding review', dsl_restricted: 'DSL review, including DSL-only parts', pupil_copy: 'Your class’s copy: your teacher and the class chat' };

// Participants' names, from the `joined` events of the timeline.
function namesOf(d) {
  const names = new Map();
  for (const e of d.events || []) {
    const j = e.event?.joined;
    if (j) names.set(j.participant, j.name);
  }
  return names;
}

const THING = { microphone: 'microphone', camera: 'camera', screen_share: 'screen share', annotate: 'drawing' };

// One recorded event as a sentence, with people's names (never an issuer
// URL or an internal number).
function describe(e, names) {
  const [kind, body] = typeof e.event === 'string' ? [e.event, {}] : Object.entries(e.event)[0] || [e.kind, {}];
  const n = id => names.get(id) || 'someone';
  switch (kind) {
    case 'joined': return `${body.name} joined as ${body.role}.`;
    case 'waiting': return `${n(body.participant)} waited to be let in.`;
    case 'admitted': return `${n(body.by)} let ${n(body.participant)} in.`;
    case 'denied': return `${n(body.by)} turned ${n(body.participant)} away.`;
    case 'removed': return `${n(body.by)} removed ${n(body.participant)}.`;
    case 'reallowed': return `${n(body.by)} allowed a removed pupil back.`;
    case 'left': return `${n(body.participant)} left.`;
    case 'blocked': return 'A blocked person was removed or refused.';
    case 'locked': return `${n(body.by)} ${body.locked ? 'closed' : 'opened'} the waiting room.`;
    case 'permission_changed': return `${n(body.by)} ${body.granted ? 'allowed' : 'switched off'} ${THING[body.permission] || body.permission} for ${n(body.participant)}.`;
    case 'defaults_changed': return `${n(body.by)} ${body.granted ? 'allowed' : 'switched off'} ${THING[body.permission] || body.permission} for the whole class.`;
    case 'source_changed': return body.by != null ? `${n(body.by)} turned off ${n(body.participant)}’s ${THING[body.source]}.` : `${n(body.participant)} turned their ${THING[body.source]} ${body.on ? 'on' : 'off'}.`;
    case 'engagement_chosen': return `${n(body.participant)} chose how to take part.`;
    case 'forwarding': { const t = body.track || {}; return `${n(t.participant)}’s ${THING[t.source] || 'media'} ${body.on ? 'reached the class' : 'stopped reaching the class'}.`; }
    case 'chat_policy': return `${n(body.by)} set the class chat ${body.public_chat ? 'on' : 'off'} and private messages ${body.private_chat ? 'on' : 'off'}.`;
    case 'hold': return body.reasons?.length ? `Pupils were paused (${body.reasons.map(r => (r === 'unsupervised' ? 'no teacher present' : 'recording lost')).join(', ')}).` : 'Pupils were no longer paused.';
    case 'recorder': return body.attached ? 'The recording started.' : 'The recording was interrupted.';
    case 'concern': return `${n(body.participant)} reported a concern: “${body.text}”`;
    case 'incident': return `${n(body.by)} flagged an incident: “${body.note}”`;
    case 'hand_raised': return `${n(body.participant)} raised their hand.`;
    case 'hand_lowered': return body.by != null ? `${n(body.by)} lowered ${n(body.participant)}’s hand.` : `${n(body.participant)} lowered their hand.`;
    case 'hands_shown': return `${n(body.by)} ${body.visible ? 'showed' : 'hid'} raised hands to the class.`;
    case 'compliance': return body.kind === 'teacher_camera_off' ? `${n(body.participant)}’s camera was off for a while.` : `${n(body.participant)}’s camera was on again.`;
    case 'refused': return `${n(body.participant)} tried something that was refused (${(body.action || '').replaceAll('_', ' ')}: ${(body.code || '').replaceAll('_', ' ')}).`;
    case 'join_refused': return `Someone was refused entry (${(body.code || '').replaceAll('_', ' ')}).`;
    case 'time_ran_out': return 'The lesson’s time ran out: its window closed while it was running.';
    case 'ended': return body.by === 0 ? 'The server ended the lesson.' : `${n(body.by)} ended the lesson.`;
    case 'annotated': return body.stroke?.tool === 'laser' ? `${n(body.participant)} pointed at ${n(body.layer)}’s screen.` : `${n(body.participant)} drew on ${n(body.layer)}’s screen (${body.stroke?.tool || 'a mark'}).`;
    case 'mark_extended': return 'A drawing went on.';
    case 'mark_undone': return `${n(body.participant)} took back a drawing.`;
    case 'mark_redone': return `${n(body.participant)} put back a drawing.`;
    case 'mark_erased': return `${n(body.participant)} erased a drawing.`;
    case 'marks_cleared': return body.by != null ? `${n(body.by)} cleared ${body.marks.length} drawing${body.marks.length === 1 ? '' : 's'}.` : 'Drawings went with the shared screen.';
    case 'marks_isolated': return `${n(body.by)} ${body.isolated ? 'let pupils see only staff drawings and their own' : 'let pupils see every drawing'}.`;
    default: return kind.replaceAll('_', ' ');
  }
}
// The recorded marks over each screen-share video, as they were at the
// player's time: the served operations (draw, extend, hide, laser) applied
// in order up to that moment. Redrawn on every time update and seek, and
// every frame while a laser flash fades. Returns the redraw function (with
// `pixel(layer, x, y)` for the browser tests).
function annotationOverlays(d, videos, time) {
  const ops = d.marks || [];
  const layers = videos.filter(x => x.f.screen).map(x => {
    const layer = Number((/^p(\d+)-screen/.exec(x.f.name) || [])[1]);
    const canvas = el('canvas', { class: 'annotation-layer', 'data-layer': String(layer), 'aria-hidden': 'true' });
    x.box.append(canvas);
    return { layer, canvas, v: x.v };
  });
  const at = ms => {
    const shown = new Map();
    const lasers = [];
    for (const o of ops) {
      if (o.t_ms > ms) break;
      if (o.op === 'draw') shown.set(o.id, { layer: o.layer, stroke: { ...o.stroke, points: [...o.stroke.points] } });
      else if (o.op === 'extend') shown.get(o.id)?.stroke.points.push(...o.points);
      else if (o.op === 'hide') for (const id of o.ids) shown.delete(id);
      else if (o.op === 'laser' && ms - o.t_ms < LASER_MS) lasers.push({ layer: o.layer, stroke: o.stroke, at: o.t_ms });
    }
    return { shown: [...shown.values()], lasers };
  };
  let fading = false;
  const redraw = () => {
    const ms = time() * 1000;
    const { shown, lasers } = at(ms);
    for (const l of layers) {
      paint(l.canvas, l.v, shown.filter(m => m.layer === l.layer).map(m => m.stroke), lasers.filter(x => x.layer === l.layer), ms);
    }
    if (lasers.length && !fading) {
      fading = true;
      requestAnimationFrame(() => { fading = false; redraw(); });
    }
  };
  redraw.pixel = (layer, x, y) => {
    const l = layers.find(o => o.layer === layer);
    return l ? pixelAt(l.canvas, l.v, x, y) : null;
  };
  return redraw;
}

async function replay() {
  root.replaceChildren();
  if (isPupil && !isLeader) return start('pupil_copy', null);
  if (!isLeader) {
    root.append(el('p', { class: 'error', id: 'refused' }, 'Recordings are for senior leaders, the DSL and the pupils of a lesson\'s class.'));
    state('refused', 'forbidden');
    return;
  }
  // Nothing plays before a reason is given.
  const status = el('p', { class: 'muted', id: 'reason-status' });
  const form = el('form', { id: 'reason-form' },
    el('p', {}, 'Replaying a recording is recorded in the audit log with your reason.'),
    el('label', {}, 'Reason (required) ', el('textarea', { name: 'reason', id: 'reason', maxlength: '500', rows: '2', cols: '60' })),
    isDsl ? el('label', {}, el('input', { type: 'checkbox', name: 'restricted', id: 'include-restricted' }), ' include DSL-only parts') : '',
    el('button', { type: 'submit', id: 'reason-go' }, 'Open the recording'), status);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    if (!form.reason.value.trim()) { status.textContent = 'Please state why you need to see this recording.'; status.className = 'error'; state('reason', 'reason_required'); return; }
    const scope = isDsl && form.restricted?.checked ? 'dsl_restricted' : 'safeguarding';
    await start(scope, form.reason.value, status);
  });
  root.append(el('h1', {}, 'Replay'), form);
  state('reason');
}

async function start(scope, reason, status) {
  state('loading');
  try {
    await openReview(scope, lessonId, reason);
    const [detail, info] = await Promise.all([api(`${base}/api/recordings/${lessonId}`), api(`/api/lessons/${lessonId}`).catch(() => null)]);
    lessonInfo = info;
    render(detail);
  } catch (e) {
    if (status) showError(status, e);
    else root.append(el('p', { class: 'error', id: 'refused' }, e.message));
    state('refused', e.code);
  }
}

function render(d) {
  const videos = d.files.map(f => {
    const v = el('video', { src: f.url, preload: 'auto', playsinline: '', 'data-file': f.name, title: f.label });
    return { f, v, box: el('figure', { class: f.screen ? 'tile screen' : 'tile' }, v, el('figcaption', {}, `${f.label}${f.screen ? ' — screen' : ''}${f.role ? ` (${f.role})` : ''}`)) };
  });
  const master = videos.find(x => x.f.video)?.v || videos[0]?.v;
  const drawMarks = annotationOverlays(d, videos, () => master?.currentTime ?? 0);
  const clock = el('span', { id: 'clock' }, '0:00');
  const slider = el('input', { type: 'range', id: 'timeline', 'aria-label': 'Position in the lesson', min: '0', max: String(Math.max(1, Math.floor(d.duration_ms / 1000))), value: '0', step: '0.1' });
  const seek = secs => {
    for (const { v } of videos) { try { v.currentTime = secs; } catch (_) { /* not loaded yet */ } }
    // A seek inside buffered media makes no range request: report it for the audit log.
    request(`${base}/api/recordings/${d.lesson}/seek`, { t_ms: Math.round(secs * 1000) }).catch(() => {});
  };
  const play = el('button', { id: 'play', type: 'button', onclick: async () => {
    if (master && !master.paused) { videos.forEach(x => x.v.pause()); play.textContent = 'Play'; return; }
    for (const { v } of videos) await v.play().catch(() => {});
    play.textContent = 'Pause';
  } }, 'Play');
  slider.addEventListener('input', () => seek(Number(slider.value)));
  if (master) master.addEventListener('timeupdate', () => {
    const t = master.currentTime;
    clock.textContent = fmt(t * 1000);
    drawMarks();
    slider.value = String(t);
    // Keep every other element on the master's timeline.
    for (const { v } of videos) if (v !== master && !v.seeking && Math.abs(v.currentTime - t) > 0.5) { try { v.currentTime = t; } catch (_) { /* ignore */ } }
  });
  const restricted = d.restricted || [];
  const names = namesOf(d);
  const events = el('ol', { id: 'events', class: 'timeline' }, ...(d.events || []).map(e => el('li', { 'data-kind': e.kind },
    el('button', { type: 'button', class: 'link', 'data-seek': String(e.t_ms), onclick: () => seek(e.t_ms / 1000), 'aria-label': `Go to ${fmt(e.t_ms)}` }, fmt(e.t_ms)), ' ',
    describe(e, names))));
  const bookmarks = (d.events || []).filter(e => e.kind === 'concern' || e.kind === 'incident');
  const chat = el('ol', { id: 'chat', class: 'timeline' }, ...d.chat.map(c => el('li', { 'data-private': String(c.private) },
    el('button', { type: 'button', class: 'link', onclick: () => seek(c.t_ms / 1000), 'aria-label': `Go to ${fmt(c.t_ms)}` }, fmt(c.t_ms)),
    ` ${c.from_name}${c.private ? ` → ${c.to_name} (private)` : ''}: `, c.text)));
  const info = lessonInfo || {};
  const parts = [
    el('h1', {}, info.title ? `${info.title} · class ${info.class}` : `Lesson of ${when(d.start_ms)}`),
    el('p', { class: 'muted', id: 'scope' }, `${SCOPE[d.scope] || d.scope}${d.final ? '' : ' (the lesson is not finished yet)'} · recorded ${when(d.start_ms)}, ${fmt(d.duration_ms)} long.${d.scope === 'pupil_copy' ? '' : ' Every view and seek is recorded in the audit log.'}`),
    restricted.length ? el('p', { class: 'warning', id: 'restricted' }, d.scope === 'dsl_restricted'
      ? `DSL-only parts (shown to you): ${restricted.map(r => `${fmt(r.from_ms)}–${fmt(r.to_ms)} (${r.reason})`).join(', ')}`
      : `Parts of this recording are restricted and not shown: ${restricted.map(r => `${fmt(r.from_ms)}–${fmt(r.to_ms)}`).join(', ')}`) : null,
    d.gaps && d.gaps.length ? el('p', { class: 'warning', id: 'gaps' }, `The recorder lost parts of this lesson: ${d.gaps.map(g => `${fmt(Math.max(0, g.from / 1000 - d.start_ms))}–${fmt(Math.max(0, g.to / 1000 - d.start_ms))} (${g.reason})`).join(', ')}`) : null,
    d.withheld_parts ? el('p', { class: 'warning', id: 'restricted' }, 'Part of this lesson is not available.') : null,
    bookmarks.length ? el('p', { id: 'bookmarks' }, 'Bookmarks: ', ...bookmarks.map(b => el('button', { type: 'button', 'data-bookmark': b.kind, onclick: () => seek(b.t_ms / 1000) }, `${b.kind === 'concern' ? 'Concern' : 'Incident'} at ${fmt(b.t_ms)}`))) : null,
    el('div', { class: 'controls' }, play, ' ', slider, ' ', clock),
    el('div', { class: 'tiles', id: 'tiles' }, ...videos.map(x => x.box)),
    el('div', { class: 'columns' },
      d.scope === 'pupil_copy' ? null : el('section', {}, el('h2', {}, 'Events'), events),
      el('section', {}, el('h2', {}, d.scope === 'pupil_copy' ? 'Chat' : 'Chat (public and private)'), chat)),
  ];
  if (d.scope !== 'pupil_copy') parts.push(auditBox(d));
  if (d.scope === 'dsl_restricted') parts.push(dslTools(d));
  root.replaceChildren(...parts.filter(Boolean));
  if (master) master.addEventListener('seeked', drawMarks);
  window.review = { detail: d, videos: videos.map(x => x.v), seek, time: () => master?.currentTime ?? 0, drawMarks, markPixel: drawMarks.pixel };
  // Opened from an incident: go to that moment.
  const q = new URLSearchParams(location.search);
  const at = q.get('at') ? (Number(q.get('at')) - d.start_ms) / 1000 : q.get('t') ? Number(q.get('t')) : null;
  if (at !== null && at >= 0 && master) master.addEventListener('loadedmetadata', () => seek(at), { once: true });
  state('ready');
}

function auditBox(d) {
  const box = el('section', { id: 'who-watched' }, el('h2', {}, 'Who watched what'));
  const load = async () => {
    try {
      const rows = await api(`${base}/api/recordings/${d.lesson}/audit`);
      box.replaceChildren(el('h2', {}, 'Who watched what'), el('ul', {}, ...rows.map(r => el('li', { 'data-audit': r.action },
        `${when(r.at / 1000)} ${r.actor_name || r.actor || 'unknown'} (${r.role || '-'}) ${r.action}${r.file ? ` ${r.file}` : ''}${r.from_ms !== null && r.from_ms !== undefined ? ` ${fmt(r.from_ms)}–${fmt(r.to_ms || r.from_ms)}` : ''}${r.outcome !== 'ok' ? ` [${r.outcome}]` : ''}${r.reason ? ` — ${r.reason}` : ''}`))));
    } catch (e) { box.append(el('p', { class: 'error' }, e.message)); }
  };
  box.append(el('button', { type: 'button', id: 'load-audit', onclick: load }, 'Show'));
  return box;
}

function dslTools(d) {
  const status = el('p', { class: 'muted', id: 'dsl-status' });
  const restrict = el('form', { id: 'restrict-form' },
    el('label', {}, 'From (s) ', el('input', { name: 'from', type: 'number', min: '0', step: '1', size: '5' })),
    el('label', {}, 'To (s) ', el('input', { name: 'to', type: 'number', min: '1', step: '1', size: '5' })),
    el('label', {}, 'Reason ', el('input', { name: 'reason', required: '', maxlength: '500' })),
    el('button', { type: 'submit' }, 'Make DSL-only'));
  restrict.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      await api(`${base}/api/recordings/${d.lesson}/restrict`, { from_ms: Number(restrict.from.value) * 1000, to_ms: Number(restrict.to.value) * 1000, reason: restrict.reason.value });
      status.textContent = 'Marked DSL-only.';
    } catch (e) { showError(status, e); }
  });
  const hold = el('form', { id: 'hold-form' },
    el('label', {}, 'Reason ', el('input', { name: 'reason', required: '', maxlength: '500' })),
    el('button', { type: 'submit', name: 'place' }, d.held ? 'Lift legal hold' : 'Place legal hold'));
  hold.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      await api(`${base}/api/recordings/${d.lesson}/hold`, { held: !d.held, reason: hold.reason.value });
      status.textContent = d.held ? 'Hold lifted.' : 'Hold placed.';
    } catch (e) { showError(status, e); }
  });
  return el('section', { id: 'dsl-tools' }, el('h2', {}, 'DSL'),
    el('p', {}, `Legal hold: ${d.held ? 'yes' : 'no'}. `, el('a', { href: `${base}/api/recordings/${d.lesson}/export`, id: 'export' }, 'Export for an external agency (encrypted segments, manifest, verification report)')),
    el('h3', {}, 'Restrict a part to the DSL'), restrict, el('h3', {}, 'Legal hold'), hold, status);
}

(lessonId ? replay() : home()).catch(e => { root.append(el('p', { class: 'error' }, e.message)); state('error', e.code); });
