// Chaperone's signed-in page: lessons for everyone (live, upcoming and
// ended, each marked), lesson creation for staff (the school's classes
// offered, the start checked), blocks, visitor grants and the audit log
// for leaders. Plain ES module, no build step. The server decides
// everything; this only displays. Sections are updated in place, so a
// message such as "Lesson created." survives the list's refresh.

import { announce, api, clock, el, reconcile, showError, text, when } from './common.js';

const app = document.getElementById('app');
const me = document.getElementById('me');

const STATE = { live: 'Live now', upcoming: 'Upcoming', ended: 'Ended' };
const ORDER = { live: 0, upcoming: 1, ended: 2 };

function lessonRow(info) {
  const li = el('li', { class: 'lesson-row' },
    el('span', { class: 'state' }), ' ',
    el('a', { class: 'title' }), ' ',
    el('span', { class: 'when muted' }), ' ',
    el('span', { class: 'extra' }));
  li.update = l => {
    li.dataset.lesson = l.id;
    li.dataset.state = l.state;
    const badge = li.querySelector('.state');
    text(badge, STATE[l.state] || l.state);
    badge.className = `state badge ${l.state}`;
    const a = li.querySelector('.title');
    a.href = `/lessons/${l.id}`;
    text(a, l.title);
    text(li.querySelector('.when'), `class ${l.class} · ${clock(l.starts_at_ms)}–${new Date(l.ends_at_ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`);
    const extra = li.querySelector('.extra');
    const links = [];
    if (l.state === 'ended' && info.roles.some(r => r === 'slt' || r === 'dsl' || r === 'pupil')) links.push(el('a', { href: `/replay/${l.id}`, 'data-recording-of': l.id }, 'Recording'));
    const mine = (l.teachers || []).concat(l.assistants || []).some(u => u.subject === info.user.subject && u.issuer === info.user.issuer);
    if (l.state !== 'upcoming' && (mine || info.roles.some(r => r === 'slt' || r === 'dsl'))) {
      links.push(el('a', { href: `/api/lessons/${l.id}/register.csv`, download: '', 'data-register-of': l.id }, 'Register (CSV)'));
    }
    if (extra.dataset.for !== `${l.id}-${l.state}`) {
      extra.dataset.for = `${l.id}-${l.state}`;
      extra.replaceChildren(...links.flatMap((a, i) => (i ? [' · ', a] : [a])));
    }
  };
  return li;
}

class LessonList {
  constructor(info) {
    this.info = info;
    this.list = el('ul', { class: 'lessons', id: 'lessons' });
    this.empty = el('p', { id: 'no-lessons', class: 'muted' }, 'No lessons yet.');
    this.element = el('section', { 'aria-labelledby': 'lessons-heading' }, el('h1', { id: 'lessons-heading' }, 'Your lessons'), this.empty, this.list);
  }

  async refresh() {
    const lessons = await api('/api/lessons');
    lessons.sort((a, b) => ORDER[a.state] - ORDER[b.state] || (a.state === 'ended' ? b.starts_at_ms - a.starts_at_ms : a.starts_at_ms - b.starts_at_ms));
    this.empty.hidden = lessons.length > 0;
    this.list.hidden = lessons.length === 0;
    reconcile(this.list, lessons, l => l.id, () => lessonRow(this.info), (li, l) => li.update(l));
    return lessons;
  }
}

const pad = n => String(n).padStart(2, '0');
const local = d => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;

async function createForm(onCreated) {
  const classes = await api('/api/classes').catch(() => []);
  const status = el('p', { class: 'muted', id: 'create-status' });
  const now = new Date(Date.now() + 5 * 60000);
  const form = el('form', { id: 'create-lesson', class: 'grid-form' },
    el('label', { for: 'new-title' }, 'Title'), el('input', { id: 'new-title', name: 'title', required: true, maxlength: '120' }),
    el('label', { for: 'new-class' }, 'Class'),
    el('select', { id: 'new-class', name: 'class', required: true },
      el('option', { value: '' }, classes.length ? 'Choose a class' : 'No classes known yet'),
      ...classes.map(c => el('option', { value: c }, c))),
    el('label', { for: 'new-starts' }, 'Starts'), el('input', { id: 'new-starts', name: 'starts', type: 'datetime-local', required: true, min: local(new Date()) }),
    el('label', { for: 'new-minutes' }, 'Minutes'), el('input', { id: 'new-minutes', name: 'minutes', type: 'number', min: '5', max: '480', value: '60' }),
    el('span'), el('button', { type: 'submit' }, 'Create lesson'));
  form.starts.value = local(now);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const starts = new Date(form.starts.value).getTime();
    status.className = 'muted';
    try {
      const l = await api('/api/lessons', { title: form.title.value, class: form.class.value, starts_at_ms: starts, ends_at_ms: starts + Number(form.minutes.value) * 60000 });
      announce(text(status, `Lesson “${l.title}” created for class ${l.class}, ${when(l.starts_at_ms)}.`).textContent);
      form.title.value = '';
      await onCreated();
    } catch (e) { showError(status, e); }
  });
  return el('section', { 'aria-labelledby': 'new-lesson-heading' }, el('h2', { id: 'new-lesson-heading' }, 'New lesson'), form, status);
}

function personPicker(id, name, people) {
  return el('select', { id, name }, ...people.map(p => el('option', { value: JSON.stringify(p.user) }, `${p.name} (${(p.roles || []).join(', ')})`)));
}

async function leaderTools(info, lessons) {
  if (!info.may_block && !info.may_grant_visitors) return [];
  const people = await api('/api/people').catch(() => []);
  const out = [];
  if (info.may_block) {
    const status = el('p', { class: 'muted', id: 'block-status' });
    const form = el('form', { id: 'block-form', class: 'grid-form' },
      el('label', { for: 'block-user' }, 'Person'), personPicker('block-user', 'user', people),
      el('label', { for: 'block-reason' }, 'Reason'), el('input', { id: 'block-reason', name: 'reason', required: true, maxlength: '500' }),
      el('span'), el('button', { type: 'submit', class: 'danger' }, 'Block everywhere'));
    form.addEventListener('submit', async ev => {
      ev.preventDefault();
      try {
        const r = await api('/api/blocks', { user: JSON.parse(form.user.value), reason: form.reason.value });
        announce(text(status, `Blocked; ${r.sessions_ended} session(s) ended.`).textContent);
        status.className = 'muted';
      } catch (e) { showError(status, e); }
    });
    out.push(el('section', { 'aria-labelledby': 'block-heading' }, el('h2', { id: 'block-heading' }, 'Block a person'), form, status));
  }
  if (info.may_grant_visitors) {
    const status = el('p', { class: 'muted', id: 'grant-status' });
    const visitors = people.filter(p => (p.roles || []).includes('visitor'));
    const form = el('form', { id: 'grant-form', class: 'grid-form' },
      el('label', { for: 'grant-visitor' }, 'Visitor who has signed in before'),
      el('select', { id: 'grant-visitor', name: 'visitor' }, el('option', { value: '' }, 'Someone new (fill in below)'),
        ...visitors.map(p => el('option', { value: JSON.stringify(p.user) }, p.name))),
      el('label', { for: 'grant-email' }, 'Or their e-mail address'),
      el('input', { id: 'grant-email', name: 'email', type: 'email', maxlength: '254', autocomplete: 'off', 'aria-describedby': 'grant-email-help' }),
      el('span'), el('p', { id: 'grant-email-help', class: 'muted' }, 'For someone who has not signed in yet. The access becomes theirs when they first sign in with this address, if your identity provider has verified it.'),
      el('label', { for: 'grant-subject' }, 'Or their identity provider subject'),
      el('input', { id: 'grant-subject', name: 'subject', maxlength: '255', 'aria-describedby': 'grant-subject-help' }),
      el('span'), el('p', { id: 'grant-subject-help', class: 'muted' }, 'If you know it instead: the subject (user id) your identity provider gives them.'),
      el('label', { for: 'grant-lesson' }, 'Lesson'),
      el('select', { id: 'grant-lesson', name: 'lesson' }, ...lessons.filter(l => l.state !== 'ended').map(l => el('option', { value: l.id }, `${l.title} (${l.class}, ${clock(l.starts_at_ms)})`))),
      el('label', { for: 'grant-hours' }, 'Hours from now'), el('input', { id: 'grant-hours', name: 'hours', type: 'number', min: '1', max: '744', value: '2' }),
      el('label', { for: 'grant-reason' }, 'Reason'), el('input', { id: 'grant-reason', name: 'reason', required: true, maxlength: '500' }),
      el('span'), el('button', { type: 'submit' }, 'Grant observer access'));
    form.addEventListener('submit', async ev => {
      ev.preventDefault();
      const now = Date.now();
      const who = form.visitor.value ? { visitor: JSON.parse(form.visitor.value) }
        : form.email.value.trim() ? { visitor_email: form.email.value } : { visitor_subject: form.subject.value };
      try {
        await api('/api/visitors', { ...who, lessons: [form.lesson.value], not_before_ms: now, not_after_ms: now + Number(form.hours.value) * 3600000, reason: form.reason.value });
        announce(text(status, who.visitor_email ? `Access granted to ${who.visitor_email.trim()}, from their first sign-in with that address.` : 'Access granted.').textContent);
        status.className = 'muted';
      } catch (e) { showError(status, e); }
    });
    out.push(el('section', { 'aria-labelledby': 'grant-heading' }, el('h2', { id: 'grant-heading' }, 'Grant a visitor access'), form, status));
  }
  if (info.may_block) {
    const rows = await api('/api/audit').catch(() => []);
    out.push(el('section', { id: 'audit', 'aria-labelledby': 'audit-heading' }, el('h2', { id: 'audit-heading' }, 'Audit log (latest)'),
      el('div', { class: 'table-scroll' }, el('table', {},
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'When'), el('th', { scope: 'col' }, 'Action'), el('th', { scope: 'col' }, 'Who'), el('th', { scope: 'col' }, 'Outcome'))),
        el('tbody', {}, ...rows.slice(-50).reverse().map(r => el('tr', {}, el('td', {}, when(r.at_ms)), el('td', {}, r.action.replaceAll('_', ' ')),
          el('td', {}, r.actor ? (people.find(p => p.user.subject === r.actor.subject)?.name || r.actor.subject) : '—'), el('td', {}, r.outcome))))))));
  }
  return out;
}

async function start() {
  try {
    const lessonId = me.dataset.lesson;
    if (lessonId) {
      const { LessonClient } = await import('./lesson.js');
      await new LessonClient(app, lessonId).start();
      return;
    }
    const info = await api('/api/me');
    const list = new LessonList(info);
    const lessons = await list.refresh();
    const parts = [list.element];
    // Recordings: SLT and the DSL replay with a reason; pupils watch their class's lessons again.
    if (info.roles.some(r => r === 'slt' || r === 'dsl' || r === 'pupil')) {
      parts.push(el('p', {}, el('a', { href: '/replay', id: 'recordings-link', class: 'button' }, info.roles.includes('pupil') ? 'Watch a lesson again' : 'Recordings, concerns and incidents')));
    }
    if (info.may_create_lessons) parts.push(await createForm(() => list.refresh()));
    parts.push(...await leaderTools(info, lessons));
    app.replaceChildren(...parts);
    // Lessons open and end while the page is open.
    setInterval(() => list.refresh().catch(() => {}), 30000);
  } catch (e) {
    app.replaceChildren(el('p', { class: 'error' }, e.message));
  }
}

start();
