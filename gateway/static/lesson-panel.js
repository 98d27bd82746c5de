// The lesson page's side panel: tabs for the people (the waiting room
// first, raised hands in order, everyone in the lesson with per-pupil
// controls for staff), the chat, and for staff the lesson's settings and
// its live register. Built once, updated in place (see common.js
// `reconcile`), so a teacher tabbing through the people keeps focus while
// pupils come and go, and a half-written message survives everything.
// Every per-person control is labelled with whom it acts on.

import { api, ask, attr, clock, el, reconcile, text } from './common.js';
import { ClientMsg } from './lesson-signal.js';
import { LABEL } from './lesson-words.js';

const PERMISSIONS = ['microphone', 'camera', 'screen_share', 'annotate'];
const SHORT = { microphone: 'Mic', camera: 'Camera', screen_share: 'Screen', annotate: 'Draw' };

export class SidePanel {
  constructor(lesson, view) {
    this.lesson = lesson;
    this.view = view;
    this.tabs = [];
    this.seenChat = 0;
    this.tablist = el('div', { role: 'tablist', 'aria-label': 'Lesson panel', class: 'tabs' });
    this.element = el('aside', { id: 'side', class: 'side', 'aria-label': 'People and chat' }, this.tablist);
    this.people = this.addTab('people', 'People', this.buildPeople());
    this.chatTab = this.addTab('chat', 'Chat', this.buildChat());
    this.settings = this.addTab('settings', 'Settings', this.buildSettings());
    this.current = null;
  }

  addTab(name, label, panel) {
    const tab = el('button', { id: `tab-${name}`, type: 'button', role: 'tab', 'aria-controls': `panel-${name}`, 'aria-selected': 'false', tabindex: '-1', onclick: () => this.select(name, true) }, label);
    tab.label = label;
    tab.addEventListener('keydown', ev => {
      const shown = this.tabs.filter(t => !t.tab.hidden);
      const at = shown.findIndex(t => t.name === name);
      const go = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: shown.length - 1 }[ev.key];
      if (go === undefined) return;
      ev.preventDefault();
      this.select(shown[(go + shown.length) % shown.length].name, true);
    });
    const wrapper = el('div', { id: `panel-${name}`, role: 'tabpanel', 'aria-labelledby': `tab-${name}`, class: 'panel', hidden: true }, panel);
    this.tablist.append(tab);
    this.element.append(wrapper);
    const entry = { name, tab, panel: wrapper };
    this.tabs.push(entry);
    return entry;
  }

  select(name, focus) {
    this.current = name;
    for (const t of this.tabs) {
      const on = t.name === name;
      attr(t.tab, 'aria-selected', String(on));
      attr(t.tab, 'tabindex', on ? '0' : '-1');
      t.panel.hidden = !on;
      if (on && focus) t.tab.focus();
    }
    if (name === 'chat') this.seenChat = this.lesson.chat.length;
    this.renderTabLabels();
  }

  render() {
    const staff = this.lesson.isStaff();
    this.settings.tab.hidden = !staff;
    if (!this.current) this.select(staff ? 'people' : 'chat', false);
    this.renderPeople();
    this.renderChat();
    if (staff) this.renderSettings();
    this.renderTabLabels();
  }

  renderTabLabels() {
    const lesson = this.lesson;
    const waiting = lesson.isStaff() ? lesson.waiting.length : 0;
    text(this.people.tab, waiting ? `People (${waiting} waiting)` : `People (${lesson.roster.length})`);
    if (this.current === 'chat') this.seenChat = lesson.chat.length;
    const unread = lesson.chat.length - this.seenChat;
    text(this.chatTab.tab, unread > 0 ? `Chat (${unread} new)` : 'Chat');
  }

  // ----------------------------------------------------------- people

  buildPeople() {
    const send = msg => this.lesson.send(msg);
    this.waitingHeading = el('h2', {});
    this.admitAll = el('button', { id: 'admit-all', type: 'button', onclick: () => send(ClientMsg.admitAll()) }, 'Admit all');
    this.nobodyWaiting = el('p', { class: 'muted' }, 'Nobody is waiting.');
    this.waitingList = el('ul', { class: 'people' });
    this.waitingBox = el('section', { id: 'waiting', 'aria-labelledby': 'waiting-heading' }, attr(this.waitingHeading, 'id', 'waiting-heading'), this.admitAll, this.nobodyWaiting, this.waitingList);
    this.handsHeading = el('h2', { id: 'hands-heading' });
    this.lowerAll = el('button', { id: 'lower-all-hands', type: 'button', class: 'secondary', onclick: () => send(ClientMsg.lowerHand('all_pupils')) }, 'Lower all hands');
    this.handList = el('ol', { id: 'hand-queue', class: 'people' });
    this.handsBox = el('section', { id: 'hands', 'aria-labelledby': 'hands-heading' }, this.handsHeading, this.handList, this.lowerAll);
    this.inHeading = el('h2', { id: 'participants-heading' });
    this.bulk = el('p', { class: 'bulk' },
      el('button', { id: 'all-mics-off', type: 'button', onclick: () => send(ClientMsg.turnOff('all_pupils', 'microphone')) }, 'All mics off'), ' ',
      el('button', { id: 'all-cams-off', type: 'button', onclick: () => send(ClientMsg.turnOff('all_pupils', 'camera')) }, 'All cameras off'));
    this.inList = el('ul', { id: 'participant-list', class: 'people' });
    this.inBox = el('section', { id: 'participants', 'aria-labelledby': 'participants-heading' }, this.inHeading, this.bulk, this.inList);
    return el('div', {}, this.waitingBox, this.handsBox, this.inBox);
  }

  renderPeople() {
    const lesson = this.lesson;
    const staff = lesson.isStaff();
    const send = msg => lesson.send(msg);
    this.waitingBox.hidden = !staff;
    if (staff) {
      text(this.waitingHeading, `Waiting room (${lesson.waiting.length})`);
      this.admitAll.hidden = !lesson.waiting.length;
      this.nobodyWaiting.hidden = lesson.waiting.length > 0;
      reconcile(this.waitingList, lesson.waiting, w => w.id, w => el('li', { 'data-waiting': w.id },
        el('span', { class: 'name' }), ' ',
        el('button', { type: 'button', 'data-admit': w.id, onclick: () => send(ClientMsg.admit(w.id)) }, 'Admit'), ' ',
        el('button', { type: 'button', class: 'secondary', 'data-deny': w.id, onclick: () => send(ClientMsg.deny(w.id)) }, 'Deny')),
      (li, w) => {
        text(li.querySelector('.name'), w.name);
        attr(li.querySelector('[data-admit]'), 'aria-label', `Admit ${w.name}`);
        attr(li.querySelector('[data-deny]'), 'aria-label', `Deny ${w.name}`);
      });
    }
    // Raised hands, oldest first: staff always; pupils as the teacher allows.
    const hands = lesson.hands.filter(id => lesson.roster.some(p => p.id === id));
    const showHands = staff || lesson.role === 'observer' || lesson.status?.hands_visible;
    this.handsBox.hidden = !showHands || !hands.length;
    text(this.handsHeading, `Raised hands (${hands.length})`);
    this.lowerAll.hidden = !staff;
    reconcile(this.handList, hands, id => id, id => el('li', { 'data-hand': id }, el('span', { class: 'name' }),
      staff ? el('button', { type: 'button', class: 'secondary', 'data-lower-hand': id, onclick: () => send(ClientMsg.lowerHand({ one: id })) }, 'Lower') : null),
    (li, id) => {
      const name = this.view.nameOf(id);
      text(li.querySelector('.name'), `${name} `);
      const b = li.querySelector('[data-lower-hand]');
      if (b) attr(b, 'aria-label', `Lower ${name}’s hand`);
    });
    // Everyone in the lesson: staff first, then pupils by name.
    const order = { teacher: 0, assistant: 1, observer: 2, pupil: 3 };
    const people = [...lesson.roster].sort((a, b) => order[a.role] - order[b.role] || a.name.localeCompare(b.name));
    text(this.inHeading, `In the lesson (${people.length})`);
    this.bulk.hidden = !staff;
    reconcile(this.inList, people, p => p.id, p => this.personRow(p), (li, p) => this.updatePerson(li, p));
  }

  personRow(p) {
    const lesson = this.lesson;
    const send = msg => lesson.send(msg);
    const li = el('li', { 'data-participant': p.id, class: 'person' },
      el('span', { class: 'name' }), el('span', { class: 'live muted' }));
    if (lesson.isStaff() && p.role === 'pupil') {
      const perms = el('fieldset', { class: 'perms' }, el('legend', { class: 'sr-only' }),
        ...PERMISSIONS.map(perm => el('label', { class: 'toggle' },
          el('input', { type: 'checkbox', 'data-permission': perm, 'data-participant': p.id, onchange: ev => send(ClientMsg.setPermission({ one: p.id }, perm, ev.target.checked)) }),
          ` ${SHORT[perm]}`)));
      li.append(el('div', { class: 'actions' },
        el('button', { type: 'button', 'data-action': 'mic-off', 'data-participant': p.id, onclick: () => send(ClientMsg.turnOff({ one: p.id }, 'microphone')) }, 'Mic off'),
        el('button', { type: 'button', 'data-action': 'camera-off', 'data-participant': p.id, onclick: () => send(ClientMsg.turnOff({ one: p.id }, 'camera')) }, 'Camera off'),
        el('button', { type: 'button', class: 'secondary', 'data-action': 'remove', 'data-participant': p.id, onclick: async () => {
          const name = this.view.nameOf(p.id);
          if (await ask({ title: `Remove ${name}?`, body: `${name} leaves the lesson and cannot come back unless you let them.`, confirm: 'Remove', danger: true })) send(ClientMsg.remove(p.id));
        } }, 'Remove')), perms);
    }
    return li;
  }

  updatePerson(li, p) {
    const lesson = this.lesson;
    const me = p.id === lesson.you;
    const roleWord = { teacher: 'teacher', assistant: 'assistant', observer: 'observer', pupil: '' }[p.role];
    const hand = lesson.hands.includes(p.id);
    text(li.querySelector('.name'), `${p.name}${me ? ' (you)' : ''}${roleWord ? ` · ${roleWord}` : ''}${hand ? ' · hand up' : ''}`);
    const on = p.forwarded.map(s => LABEL[s].toLowerCase());
    text(li.querySelector('.live'), on.length ? ` ${on.join(', ')} on` : '');
    const legend = li.querySelector('legend');
    if (legend) text(legend, `What ${p.name} may use`);
    for (const b of li.querySelectorAll('[data-action]')) {
      const label = { 'mic-off': `Mic off: ${p.name}`, 'camera-off': `Camera off: ${p.name}`, remove: `Remove ${p.name}` }[b.dataset.action];
      attr(b, 'aria-label', label);
    }
    for (const input of li.querySelectorAll('input[data-permission]')) {
      const perm = input.dataset.permission;
      const allowed = !!p.permissions[perm];
      if (input.checked !== allowed) input.checked = allowed;
      attr(input, 'aria-label', `${p.name} may use: ${LABEL[perm].toLowerCase()}`);
    }
  }

  // ------------------------------------------------------------- chat

  buildChat() {
    const lesson = this.lesson;
    this.log = el('ol', { id: 'chat-log', class: 'chat', 'aria-label': 'Messages', tabindex: '0' });
    this.to = el('select', { id: 'chat-to', 'aria-label': 'Send to' });
    this.input = el('input', { id: 'chat-input', 'aria-label': 'Message', maxlength: '2000', autocomplete: 'off', placeholder: 'Write a message' });
    this.chatNote = el('p', { id: 'chat-note', class: 'muted' });
    const form = el('form', { id: 'chat-form', onsubmit: ev => {
      ev.preventDefault();
      const words = this.input.value.trim();
      if (!words) return;
      lesson.send(ClientMsg.chat(words, this.to.value ? Number(this.to.value) : undefined));
      this.input.value = '';
    } }, this.to, this.input, el('button', { id: 'chat-send', type: 'submit' }, 'Send'));
    return el('section', { class: 'chat-panel', 'aria-label': 'Chat' }, this.log, this.chatNote, form);
  }

  renderChat() {
    const lesson = this.lesson;
    const atBottom = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 8;
    // The chat only grows: messages are appended, never re-rendered.
    while (this.log.children.length < lesson.chat.length) {
      const m = lesson.chat[this.log.children.length];
      const priv = m.to != null;
      const mine = lesson.mine.has(m.from);
      this.log.append(el('li', { 'data-from': m.from, 'data-private': priv ? 'true' : 'false', class: mine ? 'mine' : undefined },
        el('strong', {}, mine ? 'You' : m.from_name),
        priv ? el('em', {}, ` (private to ${lesson.mine.has(m.to) ? 'you' : this.view.nameOf(m.to)})`) : '',
        el('span', { class: 'muted when' }, ` ${clock(m.at || Date.now())}`),
        el('span', { class: 'words' }, m.text)));
    }
    if (atBottom) this.log.scrollTop = this.log.scrollHeight;
    // Pupils may write privately to staff only; the server refuses anything else.
    const targets = lesson.roster.filter(p => p.id !== lesson.you && (lesson.isStaff() ? true : (p.role === 'teacher' || p.role === 'assistant')));
    const options = [{ id: '', name: 'Everyone' }, ...targets];
    reconcile(this.to, options, o => o.id, o => el('option', { value: String(o.id) }), (opt, o) => text(opt, o.id === '' ? 'Everyone' : `${o.name} (private)`));
    const s = lesson.status || {};
    const pupil = lesson.role === 'pupil';
    text(this.chatNote, pupil && s.public_chat === false ? 'Your teacher has paused the class chat: you can still message your teacher privately.' : '');
    this.chatNote.hidden = !this.chatNote.textContent;
  }

  // --------------------------------------------------------- settings

  buildSettings() {
    const lesson = this.lesson;
    const send = msg => lesson.send(msg);
    const s = () => lesson.status || {};
    const toggle = (id, label, onchange) => el('label', { class: 'switch' }, el('input', { id, type: 'checkbox', onchange }), ` ${label}`);
    this.registerTable = el('div', { id: 'register-live' });
    return el('div', {},
      el('section', { 'aria-labelledby': 'settings-heading' }, el('h2', { id: 'settings-heading' }, 'Lesson settings'),
        toggle('public-chat', 'Pupils may use the class chat', ev => send(ClientMsg.setChatPolicy(ev.target.checked, s().private_chat !== false))),
        toggle('private-chat', 'Pupils may message staff privately', ev => send(ClientMsg.setChatPolicy(s().public_chat !== false, ev.target.checked))),
        toggle('show-hands', 'Pupils see whose hands are up', ev => send(ClientMsg.showHands(ev.target.checked))),
        toggle('lock', 'Close the waiting room to new arrivals', ev => send(ClientMsg.lock(ev.target.checked)))),
      el('section', { 'aria-labelledby': 'register-heading' }, el('h2', { id: 'register-heading' }, 'Register'),
        el('p', {}, el('button', { id: 'register-show', type: 'button', class: 'secondary', onclick: () => this.loadRegister() }, 'Show who is here'), ' ',
          el('a', { id: 'register-csv', href: `/api/lessons/${lesson.lessonId}/register.csv`, download: '' }, 'Download the register (CSV)')),
        this.registerTable));
  }

  renderSettings() {
    const s = this.lesson.status || {};
    const set = (id, v) => { const e = document.getElementById(id); if (e && e.checked !== v) e.checked = v; };
    set('public-chat', s.public_chat !== false);
    set('private-chat', s.private_chat !== false);
    set('show-hands', !!s.hands_visible);
    set('lock', !!s.locked);
  }

  async loadRegister() {
    try {
      const rows = await api(`/api/lessons/${this.lesson.lessonId}/register`);
      this.registerTable.replaceChildren(registerTable(rows));
    } catch (e) {
      this.registerTable.replaceChildren(el('p', { class: 'error' }, e.message));
    }
  }
}

const STATUS = { present: 'here now', attended: 'attended', not_admitted: 'waited, not let in', absent: 'did not come' };

// The register as a table (used here and on the ended screen).
export function registerTable(rows) {
  const mins = s => (s >= 60 ? `${Math.round(s / 60)} min` : `${s} s`);
  return el('table', { id: 'register-table', class: 'register' },
    el('caption', { class: 'sr-only' }, 'Register'),
    el('thead', {}, el('tr', {}, ...['Name', 'Role', 'Status', 'Joined', 'Let in', 'Time in lesson'].map(h => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows.map(r => el('tr', { 'data-register': r.status },
      el('td', {}, r.name), el('td', {}, r.role), el('td', {}, STATUS[r.status] || r.status),
      el('td', {}, r.joined_ms ? clock(r.joined_ms) : '—'), el('td', {}, r.admitted_ms ? clock(r.admitted_ms) : '—'),
      el('td', {}, r.status === 'absent' ? '—' : mins(r.stayed_secs))))));
}
