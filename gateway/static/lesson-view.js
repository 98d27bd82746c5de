// The lesson page's view: a classroom layout (the lesson's title and class
// with its status; a video stage; a side panel with people, chat and, for
// staff, settings; a toolbar at the bottom) rendered from the lesson as the
// server last described it. It is built once and then brought up to date
// in place: elements that stay are the same nodes, so focus, selection and
// drafts survive every render. It keeps only what the page itself owns
// (media elements, which tab is open) and never sends or captures anything
// itself; a control it hides is still enforced by the gateway.

import { announce, api, ask, attr, clock, el, reconcile, text } from './common.js';
import { ClientMsg } from './lesson-signal.js';
import { LABEL, PATH, held } from './lesson-words.js';
import { SidePanel } from './lesson-panel.js';

export { LABEL };

// What a pupil's microphone and camera switches mean as the protocol's
// engagement choice.
function engagementFor(mic, camera) {
  if (mic && camera) return 'voice_chat_camera';
  if (mic) return 'voice_chat';
  if (camera) return 'chat_camera';
  return 'chat_only';
}

function initials(name) {
  return (name || '?').split(/\s+/).filter(w => /\w/.test(w[0] || '')).slice(0, 2).map(w => w[0].toUpperCase()).join('') || '?';
}

export class LessonView {
  // `lesson`: the LessonClient, read for what to show and called for what
  // the person does.
  constructor(root, lesson) {
    this.root = root;
    this.lesson = lesson;
    this.holdRendersWhilePressed();
    this.build();
  }

  // A click is a press and a release on the same element. Renders update
  // in place, but one may still disable or move a control between the two
  // (a roster update, a renegotiation), and a teacher's "Mic off" would be
  // lost. So while a pointer or an activation key is down, renders wait,
  // and the one that waited runs right after the release, once the click
  // has been handled.
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
    const p = roster.find(x => x.id === id) || waiting.find(x => x.id === id);
    return p ? p.name : 'someone who has left';
  }

  // The skeleton, once.
  build() {
    const $ = (tag, attrs, ...kids) => el(tag, attrs, ...kids);
    this.title = $('h1', { id: 'lesson-title' }, 'Lesson');
    this.classBadge = $('span', { id: 'lesson-class', class: 'badge' });
    this.recording = $('span', { id: 'recording', class: 'rec off', 'data-recording': 'false' }, 'Not recording');
    this.observer = $('span', { id: 'observer-present', class: 'badge', hidden: true }, 'Observer present');
    this.locked = $('span', { id: 'locked-badge', class: 'badge', hidden: true }, 'Waiting room closed');
    this.holds = $('span', { class: 'holds' });
    // Connection details: the media path (direct, or which TURN transport).
    this.pathText = $('span', { id: 'connection-path' });
    this.pathSentence = $('p', { id: 'connection-path-detail' });
    this.connection = $('details', { id: 'connection-details', class: 'badge connection', hidden: true },
      $('summary', {}, 'Connection: ', this.pathText), this.pathSentence);
    this.notice = $('p', { id: 'notice', class: 'notice', hidden: true });
    this.message = $('section', { id: 'screen-message', class: 'screen-message', hidden: true });
    this.stageMain = $('div', { id: 'stage-main', class: 'stage-main' });
    this.strip = $('div', { id: 'stage-strip', class: 'stage-strip' });
    this.audio = $('div', { id: 'audio', hidden: true });
    this.stage = $('section', { id: 'stage', class: 'stage', 'aria-label': 'Video' }, this.lesson.annotations.tools.bar, this.stageMain, this.strip, this.audio);
    this.panel = new SidePanel(this.lesson, this);
    this.toolbar = $('div', { id: 'toolbar', class: 'toolbar', role: 'toolbar', 'aria-label': 'Lesson controls' });
    this.body = $('div', { id: 'lesson-body', class: 'lesson-body', hidden: true }, this.stage, this.panel.element);
    this.root.replaceChildren($('div', { id: 'lesson', class: 'lesson' },
      $('header', { class: 'lesson-head' },
        $('div', { class: 'lesson-name' }, this.title, ' ', this.classBadge),
        $('div', { id: 'status-bar', class: 'status' }, this.recording, this.observer, this.locked, this.holds, this.connection)),
      this.notice, this.message, this.body, this.toolbar));
    this.buildToolbar();
  }

  buildToolbar() {
    const lesson = this.lesson;
    const b = (id, onclick, cls) => el('button', { id, type: 'button', class: cls, onclick });
    const media = () => lesson.media;
    this.tools = {
      mic: b('mic-toggle', () => this.toggle('microphone'), 'tool'),
      camera: b('camera-toggle', () => this.toggle('camera'), 'tool'),
      share: b('share-screen', () => media().setSource('screen_share', !media().local.screen_share), 'tool'),
      hand: b('raise-hand', () => lesson.send(ClientMsg.raiseHand(!lesson.hands.includes(lesson.you))), 'tool'),
      concern: b('report-concern', async () => {
        const words = await ask({ title: 'Tell the safeguarding lead', body: 'This goes privately to the school’s safeguarding lead, not to your class or your teacher.', field: { label: 'What is worrying you?' }, confirm: 'Send privately' });
        if (words) lesson.send(ClientMsg.reportConcern(words));
      }, 'tool secondary'),
      incident: b('flag-incident', async () => {
        const note = await ask({ title: 'Flag an incident', body: 'Recorded now, with this moment of the lesson, for the safeguarding lead.', field: { label: 'What happened?' }, confirm: 'Flag incident' });
        if (note) lesson.send(ClientMsg.flagIncident(note));
      }, 'tool secondary'),
      leave: b('leave', () => lesson.leave(), 'tool secondary'),
      // Keeps the lesson open for joining 15 minutes longer than it would
      // close (audited by the gateway; its staff only).
      extend: b('extend-lesson', async () => {
        try {
          lesson.info = await api(`/api/lessons/${lesson.lessonId}/extend`, { minutes: 15 });
          lesson.notice = `The lesson now stays open until ${clock(lesson.info.closes_at_ms)}.`;
        } catch (e) {
          lesson.notice = `The lesson was not extended: ${e.message}`;
        }
        this.render();
      }, 'tool secondary'),
      end: b('end-lesson', async () => {
        if (await ask({ title: 'End the lesson for everyone?', body: 'Everyone leaves, the recording is finished and the lesson cannot be joined again.', confirm: 'End lesson', danger: true })) lesson.send(ClientMsg.endLesson());
      }, 'tool danger'),
    };
    text(this.tools.concern, 'Report a concern');
    text(this.tools.incident, 'Flag incident');
    text(this.tools.leave, 'Leave');
    text(this.tools.end, 'End lesson');
    text(this.tools.extend, 'Keep open 15 min longer');
  }

  // My microphone or camera on or off: staff switch the source; a pupil's
  // switches are their choice of how to take part, within what is allowed.
  toggle(source) {
    const { media } = this.lesson;
    if (this.lesson.role === 'pupil') {
      // From the choice (set at once), not the capture (which takes a
      // moment): two quick presses must not undo each other.
      const wants = this.pupilWants();
      wants[source] = !wants[source];
      return media.setEngagement(engagementFor(wants.microphone, wants.camera));
    }
    return media.setSource(source, !media.local[source]);
  }

  // A pupil's current choice, as microphone and camera switches.
  pupilWants() {
    const e = this.lesson.media.engagement;
    return { microphone: e === 'voice_chat' || e === 'voice_chat_camera', camera: e === 'chat_camera' || e === 'voice_chat_camera' };
  }

  render() {
    if (this.pressed) {
      this.renderWaiting = true;
      return;
    }
    this.renderWaiting = false;
    const lesson = this.lesson;
    const info = lesson.info;
    if (info) {
      text(this.title, info.title);
      text(this.classBadge, `Class ${info.class}`);
      if (document.title !== `${info.title} · Chaperone`) document.title = `${info.title} · Chaperone`;
    }
    this.renderStatus();
    if (text(this.notice, lesson.notice) && lesson.notice !== this.noticeSaid) {
      this.noticeSaid = lesson.notice;
      announce(lesson.notice);
    }
    this.notice.hidden = !lesson.notice || lesson.state === 'refused';
    const inLesson = lesson.state === 'admitted';
    this.body.hidden = !inLesson;
    this.toolbar.hidden = !inLesson && lesson.state !== 'waiting';
    this.renderMessage();
    this.renderToolbar();
    if (inLesson) {
      this.renderStage();
      this.panel.render();
    }
  }

  renderStatus() {
    const s = this.lesson.live() ? this.lesson.status : null;
    const on = !!s?.recording;
    // Only what the server said is shown: no status yet (joining, the
    // waiting room, after the end) shows no recording indicator at all.
    this.recording.hidden = !s;
    text(this.recording, on ? '● Recording' : 'Not recording');
    this.recording.className = on ? 'rec on' : 'rec off';
    this.recording.dataset.recording = String(on);
    this.observer.hidden = !s?.observer_present;
    this.locked.hidden = !s?.locked;
    reconcile(this.holds, s?.held || [], h => h, h => el('span', { class: 'held', 'data-held': h }), (e, h) => text(e, held(h)));
    const path = this.lesson.state === 'admitted' ? this.lesson.media.currentPath : null;
    this.connection.hidden = !path;
    attr(this.connection, 'data-path', path || '');
    document.body.dataset.mediaPath = path || '';
    const [short, sentence] = PATH[path] || [path || '', ''];
    text(this.pathText, short);
    text(this.pathSentence, sentence);
  }

  // Whatever is not the lesson itself: joining, the waiting room, the end.
  renderMessage() {
    const lesson = this.lesson;
    const m = lesson.screen();
    this.message.hidden = !m;
    if (!m) { this.shownMessage = null; return; }
    if (this.shownMessage === m.key) return;
    this.shownMessage = m.key;
    attr(this.message, 'data-screen', m.key);
    this.message.replaceChildren(el('h2', { id: m.id || undefined }, m.heading), ...m.lines.map(l => (typeof l === 'string' ? el('p', {}, l) : l)));
    announce(`${m.heading}. ${m.lines.filter(l => typeof l === 'string').join(' ')}`);
  }

  renderToolbar() {
    const lesson = this.lesson;
    const { media, me, role } = lesson;
    const staff = lesson.isStaff();
    const pupil = role === 'pupil';
    const inLesson = lesson.state === 'admitted';
    const show = [];
    if (inLesson && (staff || pupil)) {
      for (const [key, source] of [['mic', 'microphone'], ['camera', 'camera']]) {
        const b = this.tools[key];
        const on = pupil ? this.pupilWants()[source] : !!media.local[source];
        const allowed = staff || !!me.permissions[source];
        text(b, `${source === 'microphone' ? 'Microphone' : 'Camera'} ${on ? 'on' : 'off'}`);
        attr(b, 'aria-pressed', String(on));
        attr(b, 'disabled', !allowed && !on);
        attr(b, 'title', allowed ? null : `Your teacher has not allowed ${source === 'microphone' ? 'microphones' : 'cameras'} yet`);
        b.classList.toggle('on', on);
        show.push(b);
      }
      if (staff || me.permissions.screen_share) {
        const on = !!media.local.screen_share;
        text(this.tools.share, on ? 'Stop sharing' : 'Share screen');
        attr(this.tools.share, 'aria-pressed', String(on));
        show.push(this.tools.share);
      }
    }
    if (inLesson && pupil) {
      const up = lesson.hands.includes(lesson.you);
      text(this.tools.hand, up ? 'Lower hand' : 'Raise hand');
      attr(this.tools.hand, 'aria-pressed', String(up));
      this.tools.hand.classList.toggle('on', up);
      show.push(this.tools.hand);
    }
    if (pupil && (inLesson || lesson.state === 'waiting')) show.push(this.tools.concern);
    if (inLesson && staff) show.push(this.tools.incident);
    if (inLesson || lesson.state === 'waiting') show.push(this.tools.leave);
    if (inLesson && staff && lesson.isStaffAccount()) show.push(this.tools.extend);
    if (inLesson && staff) show.push(this.tools.end);
    reconcile(this.toolbar, show, b => b.id, b => b, () => {});
  }

  // ------------------------------------------------------------ the stage

  // Tiles come from the roster, never from tracks alone: a participant who
  // left has no tile (whatever became of their track), and a camera the
  // server no longer forwards shows its owner's name, not a frozen frame.
  renderStage() {
    const lesson = this.lesson;
    const { roster, media, role } = lesson;
    const remote = id => media.remote.get(id);
    const live = (p, source) => p.forwarded.includes(source) && remote(`p${p.id}/${source}`);
    const staffIds = new Set(roster.filter(p => p.role === 'teacher' || p.role === 'assistant').map(p => p.id));
    const publishers = roster.filter(p => p.id !== lesson.you && p.role !== 'observer');
    const screens = publishers.filter(p => live(p, 'screen_share')).map(p => ({ kind: 'screen', p }));
    // One's own shared screen, while the server forwards it: the sharer sees
    // the marks others draw on it.
    if (media.local.screen_share && lesson.me.forwarded?.includes('screen_share')) screens.push({ kind: 'myscreen' });
    let cameras;
    if (role === 'pupil') {
      // Pupils: their teachers always (a placeholder when the camera is
      // off), classmates only while their camera is on.
      cameras = publishers.filter(p => staffIds.has(p.id) || live(p, 'camera')).map(p => ({ kind: 'camera', p }));
    } else {
      cameras = publishers.map(p => ({ kind: 'camera', p }));
    }
    if (role !== 'observer') cameras.push({ kind: 'self' });
    // The large area: a screen share, or for pupils their teacher.
    let main = screens;
    let strip = cameras;
    if (!screens.length && role === 'pupil') {
      main = cameras.filter(t => t.kind === 'camera' && staffIds.has(t.p.id)).slice(0, 1);
      strip = cameras.filter(t => !main.includes(t));
    }
    this.stage.classList.toggle('has-main', main.length > 0);
    this.stage.classList.toggle('grid-only', main.length === 0);
    const key = t => (t.kind === 'self' || t.kind === 'myscreen' ? t.kind : `${t.p.id}-${t.kind}`);
    const empty = { kind: 'empty' };
    const tiles = (area, items) => reconcile(area, items, t => (t.kind === 'empty' ? 'empty' : key(t)),
      t => (t.kind === 'empty' ? el('p', { class: 'muted stage-empty' }, 'Your teacher’s video appears here.') : this.tile(t)),
      (e, t) => { if (t.kind !== 'empty') this.updateTile(e, t); });
    tiles(this.stageMain, main.length || role !== 'pupil' ? main : [empty]);
    lesson.annotations.renderTools(screens.length > 0);
    tiles(this.strip, strip);
    const voices = roster.filter(p => p.id !== lesson.you && live(p, 'microphone'));
    reconcile(this.audio, voices, p => `p${p.id}/microphone`, p => {
      const a = el('audio', { autoplay: true, 'data-track': `p${p.id}/microphone` });
      return a;
    }, (a, p) => {
      const t = remote(`p${p.id}/microphone`);
      if (t && a.srcObject !== t.stream) a.srcObject = t.stream;
    });
  }

  tile(t) {
    const caption = el('figcaption', {});
    const dataTile = t.kind === 'self' || t.kind === 'myscreen' ? t.kind : (t.kind === 'screen' ? `${t.p.id}-screen` : String(t.p.id));
    const tile = el('figure', { class: t.kind === 'myscreen' ? 'tile screen mine' : `tile ${t.kind}`, 'data-tile': dataTile }, caption);
    tile.caption = caption;
    return tile;
  }

  updateTile(tile, t) {
    const lesson = this.lesson;
    let stream = null;
    let trackId = null;
    let name;
    let videoId;
    if (t.kind === 'self') {
      const cam = lesson.media.local.camera;
      if (cam) {
        if (!this.selfStream || this.selfStream.getVideoTracks()[0] !== cam) this.selfStream = new MediaStream([cam]);
        stream = this.selfStream;
      }
      name = 'You';
      videoId = 'self-view';
    } else if (t.kind === 'myscreen') {
      const screen = lesson.media.local.screen_share;
      if (screen) {
        if (!this.myScreen || this.myScreen.getVideoTracks()[0] !== screen) this.myScreen = new MediaStream([screen]);
        stream = this.myScreen;
      }
      name = 'Your shared screen';
      videoId = 'my-screen';
    } else {
      const source = t.kind === 'screen' ? 'screen_share' : 'camera';
      trackId = `p${t.p.id}/${source}`;
      const r = t.p.forwarded.includes(source) ? lesson.media.remote.get(trackId) : null;
      stream = r ? r.stream : null;
      name = t.kind === 'screen' ? `${t.p.name}: screen` : t.p.name;
    }
    let video = tile.querySelector('video');
    let placeholder = tile.querySelector('.placeholder');
    if (stream) {
      placeholder?.remove();
      if (!video) {
        video = el('video', { autoplay: true, playsinline: true, id: videoId, 'data-track': trackId || undefined, 'aria-label': name });
        video.muted = true;
        tile.prepend(video);
      }
      if (video.srcObject !== stream) video.srcObject = stream;
    } else {
      video?.remove();
      if (!placeholder) {
        placeholder = el('div', { class: 'placeholder' }, el('span', { class: 'initials', 'aria-hidden': 'true' }), el('span', { class: 'off' }, 'Camera off'));
        tile.prepend(placeholder);
      }
      text(placeholder.querySelector('.initials'), initials(t.kind === 'self' || t.kind === 'myscreen' ? lesson.myName : t.p.name));
    }
    // Marks on a shared screen, over its picture.
    if (t.kind === 'screen' && stream) lesson.annotations.overlay(tile, t.p.id);
    if (t.kind === 'myscreen' && stream) lesson.annotations.overlay(tile, lesson.you);
    const hand = t.kind === 'camera' && lesson.hands.includes(t.p.id);
    const mic = t.kind === 'camera' && t.p.forwarded.includes('microphone');
    text(tile.caption, `${name}${t.kind === 'camera' && !mic ? ' (muted)' : ''}${hand ? ' · hand up' : ''}`);
    tile.classList.toggle('hand', hand);
  }
}

