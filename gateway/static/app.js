// Chaperone's signed-in page: lessons for everyone, lesson creation for
// staff, blocks, visitor grants and the audit log for leaders. Plain ES
// module, no build step. The server decides everything; this only displays.

import { api, el, showError, when } from './common.js';

const app = document.getElementById('app');
const me = document.getElementById('me');

function lessonList(lessons, info) {
  if (lessons.length === 0) return el('p', { id: 'no-lessons', class: 'muted' }, 'No lessons yet.');
  return el('ul', { class: 'lessons', id: 'lessons' }, ...lessons.map(l => el('li', { 'data-lesson': l.id },
    el('a', { href: `/lessons/${l.id}` }, l.title), ` — class ${l.class}, ${when(l.starts_at_ms)} to ${when(l.ends_at_ms)}`)));
}

function createForm(reload) {
  const status = el('p', { class: 'muted', id: 'create-status' });
  const now = Date.now();
  const form = el('form', { id: 'create-lesson' },
    el('label', {}, 'Title ', el('input', { name: 'title', required: '', maxlength: '120' })),
    el('label', {}, 'Class ', el('input', { name: 'class', required: '', maxlength: '40' })),
    el('label', {}, 'Starts ', el('input', { name: 'starts', type: 'datetime-local', required: '' })),
    el('label', {}, 'Minutes ', el('input', { name: 'minutes', type: 'number', min: '5', max: '480', value: '60' })),
    el('button', { type: 'submit' }, 'Create lesson'), status);
  const pad = n => String(n).padStart(2, '0');
  const d = new Date(now + 5 * 60000);
  form.starts.value = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const starts = new Date(form.starts.value).getTime();
    try {
      await api('/api/lessons', { title: form.title.value, class: form.class.value, starts_at_ms: starts, ends_at_ms: starts + Number(form.minutes.value) * 60000 });
      status.textContent = 'Lesson created.';
      reload();
    } catch (e) { showError(status, e); }
  });
  return el('section', {}, el('h2', {}, 'New lesson'), form);
}

function personPicker(name, people) {
  return el('select', { name }, ...people.map(p => el('option', { value: JSON.stringify(p.user) }, `${p.name} (${(p.roles || []).join(', ')})`)));
}

async function leaderTools(info, lessons) {
  const people = await api('/api/people').catch(() => []);
  const out = [];
  if (info.may_block) {
    const status = el('p', { class: 'muted', id: 'block-status' });
    const form = el('form', { id: 'block-form' },
      el('label', {}, 'Person ', personPicker('user', people)),
      el('label', {}, 'Reason ', el('input', { name: 'reason', required: '', maxlength: '500' })),
      el('button', { type: 'submit' }, 'Block everywhere'), status);
    form.addEventListener('submit', async ev => {
      ev.preventDefault();
      try {
        const r = await api('/api/blocks', { user: JSON.parse(form.user.value), reason: form.reason.value });
        status.textContent = `Blocked; ${r.sessions_ended} session(s) ended.`;
      } catch (e) { showError(status, e); }
    });
    out.push(el('section', {}, el('h2', {}, 'Block a person'), form));
  }
  if (info.may_grant_visitors) {
    const status = el('p', { class: 'muted', id: 'grant-status' });
    const form = el('form', { id: 'grant-form' },
      el('label', {}, 'Visitor ', personPicker('visitor', people.filter(p => (p.roles || []).includes('visitor')))),
      el('label', {}, 'Lesson ', el('select', { name: 'lesson' }, ...lessons.map(l => el('option', { value: l.id }, `${l.title} (${l.class})`)))),
      el('label', {}, 'Hours from now ', el('input', { name: 'hours', type: 'number', min: '1', max: '744', value: '2' })),
      el('label', {}, 'Reason ', el('input', { name: 'reason', required: '', maxlength: '500' })),
      el('button', { type: 'submit' }, 'Grant observer access'), status);
    form.addEventListener('submit', async ev => {
      ev.preventDefault();
      const now = Date.now();
      try {
        await api('/api/visitors', { visitor: JSON.parse(form.visitor.value), lessons: [form.lesson.value], not_before_ms: now, not_after_ms: now + Number(form.hours.value) * 3600000, reason: form.reason.value });
        status.textContent = 'Access granted.';
      } catch (e) { showError(status, e); }
    });
    out.push(el('section', {}, el('h2', {}, 'Grant a visitor access'), form));
  }
  if (info.may_block) {
    const rows = await api('/api/audit').catch(() => []);
    out.push(el('section', { id: 'audit' }, el('h2', {}, 'Audit log (latest)'),
      el('table', {}, el('tr', {}, el('th', {}, 'When'), el('th', {}, 'Action'), el('th', {}, 'Who'), el('th', {}, 'Outcome')),
        ...rows.slice(-50).reverse().map(r => el('tr', {}, el('td', {}, when(r.at_ms)), el('td', {}, r.action),
          el('td', {}, r.actor ? r.actor.subject : '—'), el('td', {}, r.outcome))))));
  }
  return out;
}

async function render() {
  try {
    const info = await api('/api/me');
    const lessons = await api('/api/lessons');
    const parts = [];
    const lessonId = me.dataset.lesson;
    if (lessonId) {
      const { LessonClient } = await import('./lesson.js');
      await new LessonClient(app, lessonId).start();
      return;
    }
    parts.push(el('section', {}, el('h2', {}, 'Your lessons'), lessonList(lessons, info)));
    // Recordings: SLT and the DSL replay with a reason; pupils watch their class's lessons again.
    if (info.roles.some(r => r === 'slt' || r === 'dsl' || r === 'pupil')) {
      parts.push(el('p', {}, el('a', { href: '/replay', id: 'recordings-link', class: 'button' }, info.roles.includes('pupil') ? 'Watch a lesson again' : 'Recordings, concerns and incidents')));
    }
    if (info.may_create_lessons) parts.push(createForm(render));
    parts.push(...await leaderTools(info, lessons));
    app.replaceChildren(...parts);
  } catch (e) {
    app.replaceChildren(el('p', { class: 'error' }, e.message));
  }
}

render();
