// The lesson page's view: renders the lesson as the server last described
// it (state, roster, waiting room, status, chat, notice) with the media it
// receives, and turns clicks into the lesson's actions. It keeps only what
// the page itself owns: media elements across renders, the chat draft and
// recipient, and whether a press is under way. It never sends or captures
// anything itself, and a control it hides is still enforced by the gateway.

import { el } from './common.js';
import { ClientMsg } from './lesson-signal.js';

const PERMISSIONS = ['microphone', 'camera', 'screen_share', 'annotate'];
export const LABEL = { microphone: 'Mic', camera: 'Camera', screen_share: 'Screen share', annotate: 'Annotate' };
const ENGAGEMENTS = [
  ['chat_only', 'Chat only'],
  ['voice_chat', 'Voice and chat'],
  ['chat_camera', 'Chat and camera'],
  ['voice_chat_camera', 'Voice, chat and camera'],
];

export class LessonView {
  // `lesson`: the LessonClient, read for what to show (its state and its
  // `media`) and called for what the person does (`send`, `media`).
  constructor(root, lesson) {
    this.root = root;
    this.lesson = lesson;
    this.elements = new Map(); // media elements kept across renders, by key
    this.holdRendersWhilePressed();
  }

  // A click is a press and a release on the same element, and a render
  // replaces every element of the page: a message arriving between the two
  // (a roster update, a renegotiation) would swallow the click, and a
  // teacher's "Mic off" would be lost. So while a pointer or an activation
  // key is down, renders wait, and the one that waited runs right after the
  // release, once the click has been handled.
  holdRendersWhilePressed() {
    this.pressed = false;
    this.renderWaiting = false;
    const press = () => { this.pressed = true; };
    const release = () => {
      if (!this.pressed) return;
      this.pressed = false;
      if (this.renderWaiting) setTimeout(() => this.render(), 0);
    };
    const activates = ev => ev.key === 'Enter' || ev.key === ' ';
    document.addEventListener('pointerdown', press, true);
    document.addEventListener('keydown', ev => { if (activates(ev)) press(); }, true);
    for (const type of ['pointerup', 'pointercancel']) document.addEventListener(type, release, true);
    document.addEventListener('keyup', ev => { if (activates(ev)) release(); }, true);
    window.addEventListener('blur', release);
  }

  nameOf(id) {
    const { roster, waiting } = this.lesson;
    return (roster.find(p => p.id === id) || waiting.find(p => p.id === id) || { name: `#${id}` }).name;
  }

  // A media element for `stream`, reused across renders so playback never restarts.
  mediaElement(tag, key, stream, attrs = {}) {
    let e = this.elements.get(key);
    if (!e || e.srcObject !== stream) {
      e = el(tag, { autoplay: true, playsinline: tag === 'video', ...attrs });
      e.muted = tag === 'video';
      e.srcObject = stream;
      this.elements.set(key, e);
    }
    return e;
  }

  video(stream, attrs) {
    return this.mediaElement('video', attrs['data-track'] || attrs.id, stream, attrs);
  }

  selfStream() {
    const camera = this.lesson.media.local.camera;
    if (!this.self || this.self.getVideoTracks()[0] !== camera) this.self = new MediaStream([camera]);
    return this.self;
  }

  statusBar() {
    const s = this.lesson.status;
    const items = [];
    if (s) {
      items.push(el('span', { id: 'recording', class: s.recording ? 'rec on' : 'rec off', 'data-recording': String(s.recording) }, s.recording ? '● Recording' : 'Not recording'));
      if (s.observer_present) items.push(el('span', { id: 'observer-present', class: 'badge' }, 'Observer present'));
      if (s.locked) items.push(el('span', { class: 'badge' }, 'Waiting room locked'));
      for (const h of s.held) items.push(el('span', { class: 'held', 'data-held': h }, h === 'unsupervised' ? 'Paused: no teacher is present' : 'Paused: the recording was lost'));
    }
    return el('div', { class: 'status', role: 'status' }, ...items);
  }

  mediaArea() {
    const { roster, role, media } = this.lesson;
    const area = el('div', { class: 'media' });
    const teacherIds = roster.filter(p => p.role === 'teacher' || p.role === 'assistant').map(p => p.id);
    const tracks = [...media.remote.entries()];
    const videos = tracks.filter(([, t]) => t.source !== 'microphone');
    const audios = tracks.filter(([, t]) => t.source === 'microphone');
    const main = videos.filter(([, t]) => teacherIds.includes(t.participant) && t.source === 'camera');
    const screens = videos.filter(([, t]) => t.source === 'screen_share');
    const others = videos.filter(([, t]) => !teacherIds.includes(t.participant) && t.source === 'camera');
    for (const [id, t] of screens) area.append(el('figure', { class: 'screen' }, this.video(t.stream, { 'data-track': id }), el('figcaption', {}, `${this.nameOf(t.participant)}: screen`)));
    for (const [id, t] of main) area.append(el('figure', { class: 'main' }, this.video(t.stream, { 'data-track': id }), el('figcaption', {}, this.nameOf(t.participant))));
    const grid = el('div', { class: 'grid' });
    for (const [id, t] of others) grid.append(el('figure', {}, this.video(t.stream, { 'data-track': id }), el('figcaption', {}, this.nameOf(t.participant))));
    if (media.local.camera) grid.append(el('figure', { class: 'self' }, this.video(this.selfStream(), { id: 'self-view' }), el('figcaption', {}, 'You')));
    area.append(grid);
    for (const [id, t] of audios) area.append(this.mediaElement('audio', id, t.stream, { 'data-track': id }));
    if (!main.length && role === 'pupil') area.prepend(el('p', { class: 'muted' }, 'The teacher’s video appears here.'));
    return area;
  }

  chatPanel() {
    const lesson = this.lesson;
    const log = el('ol', { id: 'chat-log', class: 'chat' }, ...lesson.chat.map(m => el('li', { 'data-from': m.from, 'data-private': m.to != null ? 'true' : 'false' },
      el('strong', {}, m.from_name), m.to != null ? el('em', {}, ` (private to ${lesson.mine.has(m.to) ? 'you' : this.nameOf(m.to)})`) : '', `: ${m.text}`)));
    const to = el('select', { id: 'chat-to', 'aria-label': 'Send to' }, el('option', { value: '' }, 'Everyone'));
    // Pupils may write privately to staff only; the server refuses anything else.
    const targets = lesson.roster.filter(p => p.id !== lesson.you && (lesson.isStaff() ? true : (p.role === 'teacher' || p.role === 'assistant')));
    for (const p of targets) to.append(el('option', { value: p.id }, `${p.name} (private)`));
    // A re-render (roster, media) must not turn a private message public
    // behind the sender's back: keep the chosen recipient and the draft.
    if ([...to.options].some(o => o.value === this.chatTo)) to.value = this.chatTo;
    to.addEventListener('change', () => { this.chatTo = to.value; });
    const input = el('input', { id: 'chat-input', 'aria-label': 'Message', maxlength: '2000', autocomplete: 'off' });
    input.value = this.chatDraft || '';
    input.addEventListener('input', () => { this.chatDraft = input.value; });
    const form = el('form', { id: 'chat-form', onsubmit: ev => {
      ev.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      lesson.send(ClientMsg.chat(text, to.value ? Number(to.value) : undefined));
      input.value = '';
      this.chatDraft = '';
    } }, to, input, el('button', { id: 'chat-send', type: 'submit' }, 'Send'));
    return el('section', { class: 'chat-panel', 'aria-label': 'Chat' }, el('h2', {}, 'Chat'), log, form);
  }

  pupilControls() {
    const { me, media } = this.lesson;
    const select = el('select', { id: 'engagement', 'aria-label': 'How I take part', onchange: ev => media.setEngagement(ev.target.value) },
      ...ENGAGEMENTS.map(([v, l]) => el('option', { value: v, selected: v === media.engagement }, l)));
    const share = me.permissions.screen_share
      ? el('button', { id: 'share-screen', type: 'button', onclick: () => media.setSource('screen_share', !media.local.screen_share) }, media.local.screen_share ? 'Stop sharing' : 'Share my screen')
      : null;
    const concern = el('button', { id: 'report-concern', type: 'button', class: 'secondary', onclick: () => {
      const text = prompt('What worries you? This goes privately to the safeguarding lead.');
      if (text && text.trim()) this.lesson.send(ClientMsg.reportConcern(text.trim()));
    } }, 'Report a concern');
    const perms = PERMISSIONS.filter(p => me.permissions[p]).map(p => LABEL[p]).join(', ') || 'none';
    return el('section', { class: 'controls', 'aria-label': 'My controls' },
      el('label', {}, 'How I take part ', select), share, concern,
      el('p', { class: 'muted', id: 'my-permissions' }, `Allowed: ${perms}. On: ${me.sources_on.map(s => LABEL[s]).join(', ') || 'nothing'}.`));
  }

  teacherControls() {
    const lesson = this.lesson;
    const { media } = lesson;
    const send = msg => lesson.send(msg);
    const waiting = el('section', { id: 'waiting', 'aria-label': 'Waiting room' }, el('h2', {}, `Waiting room (${lesson.waiting.length})`),
      lesson.waiting.length ? el('button', { id: 'admit-all', type: 'button', onclick: () => send(ClientMsg.admitAll()) }, 'Admit all') : el('p', { class: 'muted' }, 'Nobody is waiting.'),
      el('ul', {}, ...lesson.waiting.map(w => el('li', { 'data-waiting': w.id }, `${w.name} `,
        el('button', { type: 'button', 'data-admit': w.id, onclick: () => send(ClientMsg.admit(w.id)) }, 'Admit'), ' ',
        el('button', { type: 'button', class: 'secondary', 'data-deny': w.id, onclick: () => send(ClientMsg.deny(w.id)) }, 'Deny')))));
    const pupils = lesson.roster.filter(p => p.role === 'pupil');
    const rows = pupils.map(p => el('tr', { 'data-participant': p.id },
      el('td', {}, p.name),
      el('td', {}, p.forwarded.map(s => LABEL[s]).join(', ') || '—'),
      el('td', {}, ...PERMISSIONS.map(perm => el('label', { class: 'toggle' },
        el('input', { type: 'checkbox', 'data-permission': perm, 'data-participant': p.id, checked: !!p.permissions[perm], onchange: ev => send(ClientMsg.setPermission({ one: p.id }, perm, ev.target.checked)) }),
        ` ${LABEL[perm]} `))),
      el('td', {},
        el('button', { type: 'button', 'data-action': 'mic-off', 'data-participant': p.id, onclick: () => send(ClientMsg.turnOff({ one: p.id }, 'microphone')) }, 'Mic off'), ' ',
        el('button', { type: 'button', 'data-action': 'camera-off', 'data-participant': p.id, onclick: () => send(ClientMsg.turnOff({ one: p.id }, 'camera')) }, 'Camera off'), ' ',
        el('button', { type: 'button', class: 'secondary', 'data-action': 'remove', 'data-participant': p.id, onclick: () => { if (confirm(`Remove ${p.name}?`)) send(ClientMsg.remove(p.id)); } }, 'Remove'))));
    const s = lesson.status || {};
    const roster = el('section', { id: 'participants', 'aria-label': 'Participants' }, el('h2', {}, `Pupils (${pupils.length})`),
      el('p', {},
        el('button', { id: 'all-mics-off', type: 'button', onclick: () => send(ClientMsg.turnOff('all_pupils', 'microphone')) }, 'All mics off'), ' ',
        el('button', { id: 'all-cams-off', type: 'button', onclick: () => send(ClientMsg.turnOff('all_pupils', 'camera')) }, 'All cameras off')),
      el('table', {}, el('tr', {}, el('th', {}, 'Pupil'), el('th', {}, 'Live'), el('th', {}, 'Allowed'), el('th', {}, '')), ...rows));
    const controls = el('section', { id: 'lesson-controls', 'aria-label': 'Lesson controls' }, el('h2', {}, 'Lesson'),
      el('label', { class: 'toggle' }, el('input', { id: 'public-chat', type: 'checkbox', checked: s.public_chat !== false, onchange: ev => send(ClientMsg.setChatPolicy(ev.target.checked, s.private_chat !== false)) }), ' Pupils’ public chat'), ' ',
      el('label', { class: 'toggle' }, el('input', { id: 'private-chat', type: 'checkbox', checked: s.private_chat !== false, onchange: ev => send(ClientMsg.setChatPolicy(s.public_chat !== false, ev.target.checked)) }), ' Pupils’ private messages'), ' ',
      el('label', { class: 'toggle' }, el('input', { id: 'lock', type: 'checkbox', checked: !!s.locked, onchange: ev => send(ClientMsg.lock(ev.target.checked)) }), ' Lock waiting room'),
      el('p', {},
        el('button', { id: 'camera-toggle', type: 'button', onclick: () => media.setSource('camera', !media.local.camera) }, media.local.camera ? 'Turn my camera off' : 'Turn my camera on'), ' ',
        el('button', { id: 'mic-toggle', type: 'button', onclick: () => media.setSource('microphone', !media.local.microphone) }, media.local.microphone ? 'Mute me' : 'Unmute me'), ' ',
        el('button', { id: 'share-screen', type: 'button', onclick: () => media.setSource('screen_share', !media.local.screen_share) }, media.local.screen_share ? 'Stop sharing' : 'Share my screen'), ' ',
        el('button', { id: 'flag-incident', type: 'button', class: 'secondary', onclick: () => {
          const note = prompt('Describe the incident (recorded for the safeguarding lead):');
          if (note && note.trim()) send(ClientMsg.flagIncident(note.trim()));
        } }, 'Flag incident'), ' ',
        el('button', { id: 'end-lesson', type: 'button', class: 'danger', onclick: () => { if (confirm('End the lesson for everyone?')) send(ClientMsg.endLesson()); } }, 'End lesson')),
      !media.local.camera ? el('p', { class: 'warning', id: 'camera-warning' }, 'Your camera is off: pupils cannot see you.') : null);
    return [waiting, roster, controls];
  }

  render() {
    if (this.pressed) {
      this.renderWaiting = true;
      return;
    }
    this.renderWaiting = false;
    const lesson = this.lesson;
    const parts = [el('h1', {}, 'Lesson'), this.statusBar()];
    if (lesson.notice) parts.push(el('p', { id: 'notice', class: 'notice', role: 'alert' }, lesson.notice));
    if (lesson.state === 'waiting') {
      parts.push(el('section', { id: 'waiting-room' }, el('h2', {}, 'Waiting room'), el('p', {}, 'Your teacher will let you in soon. You cannot see or hear the lesson until then.')));
    } else if (lesson.state === 'admitted') {
      parts.push(this.mediaArea());
      if (lesson.isStaff()) parts.push(...this.teacherControls());
      else if (lesson.role === 'pupil') parts.push(this.pupilControls());
      else parts.push(el('p', { class: 'muted' }, 'You are observing: you can see and hear the lesson, and everyone can see that an observer is present.'));
      parts.push(this.chatPanel());
    } else if (lesson.state === 'connecting') {
      parts.push(el('p', {}, 'Joining…'));
    }
    const focused = document.activeElement?.id;
    const value = focused === 'chat-input' ? document.activeElement.value : null;
    this.root.replaceChildren(...parts);
    if (focused) {
      const again = document.getElementById(focused);
      if (again) { again.focus(); if (value !== null) again.value = value; }
    }
  }
}
