// The live lesson page, for teachers, pupils and observers. Plain ES
// module, no build step. The server decides everything (who is admitted,
// what is forwarded, who may chat with whom, whose hand is up); this page
// only shows what it is told and asks for what the person clicks. A
// control that this page hides is still enforced by the gateway.
//
// This module wires the parts and keeps the lesson as the server last told
// it: lesson-devices.js (the check before joining), lesson-signal.js (the
// connection and the protocol), lesson-media.js (WebRTC), lesson-view.js
// and lesson-panel.js (rendering), lesson-words.js (what the page says).
// `window.chaperone` is the client, for people debugging and the browser
// tests: `you`, `roster`, `hands`, `ws`, `pc`, `send`, `render`,
// `setState`, `inbound`.
//
// body[data-lesson-state]: loading | upcoming | prejoin | connecting |
// waiting | admitted | reconnecting | ended | left | refused | disconnected

import { api, clock, el } from './common.js';
import { DeviceCheck } from './lesson-devices.js';
import { Annotations } from './lesson-annotate.js';
import { Media, trackKey } from './lesson-media.js';
import { Signal } from './lesson-signal.js';
import { LABEL, LessonView } from './lesson-view.js';
import { closing, controlChanged, farewell, refusal } from './lesson-words.js';

export { trackKey };

// Roles (from the page shell) that take part with a camera and microphone.
const PUBLISHERS = ['teacher', 'assistant', 'pupil'];

export class LessonClient {
  constructor(root, lessonId) {
    this.root = root;
    this.lessonId = lessonId;
    this.info = null;
    this.you = null;
    this.mine = new Set();
    this.role = null;
    this.state = 'loading';
    this.roster = [];
    this.waiting = [];
    this.hands = [];
    this.status = null;
    this.me = { permissions: {}, sources_on: [], forwarded: [] };
    this.chat = [];
    this.notice = '';
    this.myName = document.getElementById('me-name')?.textContent || '';
    this.roles = (document.getElementById('me')?.dataset.roles || '').split(' ');
    this.signal = new Signal(lessonId, {
      message: (tag, body) => this.handle(tag, body),
      failed: e => {
        this.notice = `Something went wrong: ${e.message}`;
        this.render();
      },
      refused: (words, code, body) => {
        if (code === 'ended') return this.ended();
        // Outside the lesson's window the gateway issues no token.
        if (code === 'closed') return this.ended('This lesson has closed.');
        if (code === 'not_open' && body?.opens_at_ms) {
          words = `This lesson opens at ${clock(body.opens_at_ms)}.`;
        }
        this.setState('refused');
        this.notice = words;
        this.render();
      },
      connecting: () => this.render(),
      closed: code => this.lost(code),
    });
    this.media = new Media({
      send: msg => this.send(msg),
      changed: () => this.render(),
      captureFailed: (source, e) => { this.notice = `Your ${LABEL[source].toLowerCase()} could not be used (${e.name || e.message}).`; },
      // The signaling closes as lost (4100 is not final): the page rejoins
      // and builds a new media connection.
      failed: () => {
        this.notice = 'The video connection dropped: rejoining…';
        this.signal.close(4100, 'media failed');
      },
    });
    this.annotations = new Annotations(this);
    window.chaperone = this; // for people debugging, and the browser tests
  }

  get ws() { return this.signal.ws; }
  get pc() { return this.media.pc; }

  setState(state) {
    this.state = state;
    document.body.dataset.lessonState = state;
  }

  // Whether the lesson is going on for this page (what it shows of the
  // lesson's status is only true then).
  live() { return this.state === 'admitted' || this.state === 'waiting' || this.state === 'reconnecting'; }

  async start() {
    this.setState('loading');
    try {
      this.info = await api(`/api/lessons/${this.lessonId}`);
    } catch (e) {
      this.root.replaceChildren(el('p', { class: 'error', id: 'notice' }, e.status === 404 ? 'This lesson does not exist, or it is not one of yours.' : e.message));
      this.setState('refused');
      return;
    }
    if (this.info.state === 'ended') {
      this.view = new LessonView(this.root, this);
      return this.ended();
    }
    if (this.info.state === 'upcoming') {
      this.view = new LessonView(this.root, this);
      this.setState('upcoming');
      this.render();
      // Checked again when it is due to open (and every minute until then).
      setTimeout(() => this.start(), Math.min(60000, Math.max(1000, this.info.opens_at_ms - Date.now())));
      return;
    }
    if (this.roles.some(r => PUBLISHERS.includes(r))) {
      this.setState('prejoin');
      const check = new DeviceCheck(this.root, {
        title: `${this.info.title} · class ${this.info.class}`,
        note: 'Check your camera and microphone, then join. Pupils wait until the teacher lets them in.',
      });
      this.media.devices = await check.choose();
    }
    this.view = new LessonView(this.root, this);
    this.setState('connecting');
    this.render();
    await this.signal.start();
  }

  // What fills the page when the lesson itself is not shown, or null.
  screen() {
    const info = this.info || {};
    const back = el('a', { href: '/', class: 'button secondary' }, 'Back to your lessons');
    switch (this.state) {
      case 'loading': case 'connecting':
        return { key: 'joining', heading: 'Joining the lesson…', lines: [] };
      case 'upcoming':
        return { key: 'upcoming', id: 'upcoming', heading: 'This lesson has not started yet', lines: [`It opens at ${clock(info.opens_at_ms)} and starts at ${clock(info.starts_at_ms)}. This page will let you in when it opens.`, back] };
      case 'waiting':
        return { key: 'waiting', id: 'waiting-room', heading: 'Waiting room', lines: ['Your teacher will let you in soon. You cannot see or hear the lesson until then.'] };
      case 'reconnecting':
        return { key: 'reconnecting', heading: 'Reconnecting…', lines: ['The connection dropped. You will be back in the lesson in a moment.'] };
      case 'ended': {
        const lines = [this.endedWhy || (info.ended_at_ms ? `It ended at ${clock(info.ended_at_ms)}. Thank you for taking part.` : 'Thank you for taking part.')];
        if (this.roles.some(r => r === 'slt' || r === 'dsl' || r === 'pupil')) {
          lines.push(el('p', {}, el('a', { id: 'recording-link', href: `/replay/${this.lessonId}` }, 'Watch the recording')));
        }
        const staff = (info.teachers || []).concat(info.assistants || []);
        if (this.roles.some(r => r === 'slt' || r === 'dsl') || (this.isStaffAccount() && staff.length)) {
          lines.push(el('p', {}, el('a', { id: 'register-csv', href: `/api/lessons/${this.lessonId}/register.csv`, download: '' }, 'Download the register (CSV)')));
        }
        lines.push(back);
        return { key: 'ended', id: 'ended', heading: 'The lesson has ended', lines };
      }
      case 'left':
        return { key: 'left', id: 'left', heading: 'You left the lesson', lines: [el('p', {}, el('button', { id: 'rejoin', type: 'button', onclick: () => this.rejoin() }, 'Join again'), ' ', back)] };
      case 'refused':
        return { key: `refused-${this.notice}`, id: 'refused', heading: 'You are not in this lesson', lines: [this.notice, back] };
      case 'disconnected':
        return { key: 'disconnected', heading: 'The connection was lost', lines: [el('p', {}, el('button', { id: 'rejoin', type: 'button', onclick: () => this.rejoin() }, 'Try again'), ' ', back)] };
      default:
        return null;
    }
  }

  isStaffAccount() { return this.roles.some(r => r === 'teacher' || r === 'assistant'); }

  // The lesson is over for this page: it says so, stops everything and
  // never rejoins. The recording indicator goes off with it.
  ended(why) {
    this.endedWhy = why || '';
    this.media.stop();
    this.status = null;
    this.setState('ended');
    this.notice = '';
    this.render();
  }

  leave() {
    this.setState('left');
    this.notice = '';
    this.media.stop();
    this.signal.leave();
    this.render();
  }

  async rejoin() {
    this.notice = '';
    this.setState('connecting');
    this.render();
    await this.signal.start();
  }

  // The connection closed (`code`), or could not be made (null). Unless the
  // lesson said goodbye, the person left, or the gateway refused for good,
  // the page rejoins by itself: within the reconnect grace the gateway lets
  // an admitted person straight back in, and a waiting one back to the
  // waiting room. An ended lesson is never rejoined.
  async lost(code) {
    this.media.stop();
    if (['ended', 'refused', 'left'].includes(this.state)) return this.render();
    const now = await api(`/api/lessons/${this.lessonId}`).catch(() => null);
    if (now) this.info = now;
    if (now?.state === 'ended') return this.ended();
    if (this.signal.rejoinAfter(code)) {
      this.setState('reconnecting');
      this.notice = 'Connection lost: rejoining the lesson…';
    } else {
      this.setState('disconnected');
      this.notice = '';
    }
    this.render();
  }

  send(msg) { this.signal.send(msg); }
  render() { this.view?.render(); }
  inbound() { return this.media.inbound(); }

  isStaff() { return this.role === 'teacher' || this.role === 'assistant'; }

  // One message from the gateway, in order (the next waits for this one).
  async handle(tag, body) {
    if (this.annotations.handle(tag, body)) return this.render();
    switch (tag) {
      case 'welcome':
        this.you = body.you; this.role = body.role;
        this.mine.add(body.you); // every id this page has had (rejoining gives a new one)
        this.annotations.reset();
        document.body.dataset.lessonRole = body.role;
        break;
      case 'waiting': this.setState('waiting'); break;
      case 'admitted':
        this.setState('admitted');
        this.notice = this.signal.rejoined() ? 'You are back in the lesson.' : (this.role === 'pupil' ? 'You are in the lesson.' : '');
        await this.media.start({ iceServers: this.signal.iceServers, publish: this.isStaff(), send: this.role !== 'observer' });
        // Back after a lost connection: take part as chosen before (what the
        // teacher turned off stays off: it left the choice when it happened).
        if (this.role === 'pupil' && this.media.engagement !== 'chat_only') await this.media.setEngagement(this.media.engagement);
        break;
      case 'roster': this.roster = body.participants; break;
      case 'waiting_list': this.waiting = body.waiting; break;
      case 'hands': this.hands = body.raised; break;
      case 'you': this.me = body; break;
      case 'status': this.status = body; break;
      case 'control_changed':
        this.notice = controlChanged(body.permission, body.granted, body.revoked);
        if (body.permission === 'annotate' && !body.granted) this.annotations.revoked();
        // The server already stopped forwarding it; stop capturing it here too.
        if (!body.granted && body.permission !== 'annotate') await this.media.stopLocal(body.permission);
        break;
      case 'chat': this.chat.push({ ...body, at: Date.now() }); break;
      case 'banner':
        this.notice = body.kind === 'teacher_camera_off' ? 'Your camera has been off for a while: pupils should be able to see you.' : '';
        break;
      // The server will end the lesson when its window closes (staff only).
      case 'closing': this.notice = closing(clock(Date.now() + body.in_secs * 1000)); break;
      case 'concern_received': this.notice = 'Your concern was sent privately to the safeguarding lead.'; break;
      case 'error':
        this.notice = refusal(body.code, body.action);
        document.body.dataset.lastError = body.code;
        // A refused microphone or camera is not left capturing on this page.
        if (body.code === 'not_permitted' && (body.action === 'set_engagement' || body.action === 'set_source')) {
          for (const s of ['microphone', 'camera']) if (!this.me.permissions[s]) await this.media.stopLocal(s);
        }
        break;
      case 'media_quality':
        // The server stopped (or resumed) sending us video because our link
        // cannot carry it; audio goes on.
        this.videoPaused = body.video_paused;
        document.body.dataset.videoPaused = String(body.video_paused);
        this.notice = body.video_paused ? 'Your connection is weak: video paused. You can still hear the lesson.' : 'Your connection is better: video is back.';
        break;
      case 'offer': await this.media.handleOffer(body.sdp); break;
      case 'answer': await this.media.handleAnswer(body.sdp); break;
      case 'goodbye':
        if (body.reason === 'ended') {
          this.ended();
        } else {
          this.media.stop();
          this.status = null;
          this.setState('refused');
          this.notice = farewell(body.reason);
        }
        break;
      default: break;
    }
    this.render();
  }
}
