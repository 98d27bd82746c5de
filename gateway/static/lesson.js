// The live lesson page, for teachers, pupils and observers. Plain ES
// module, no build step. The server decides everything (who is admitted,
// what is forwarded, who may chat with whom); this page only shows what it
// is told and asks for what the person clicks. A control that this page
// hides is still enforced by the gateway.
//
// This module wires the parts and keeps the lesson as the server last told
// it: lesson-signal.js (the connection and the protocol), lesson-media.js
// (WebRTC), lesson-view.js (rendering). `window.chaperone` is the client,
// for people debugging and the browser tests: `you`, `roster`, `ws`, `pc`,
// `send`, `render`, `setState`, `inbound`.

import { Media, trackKey } from './lesson-media.js';
import { Signal } from './lesson-signal.js';
import { LABEL, LessonView } from './lesson-view.js';

export { trackKey };

export class LessonClient {
  constructor(root, lessonId) {
    this.lessonId = lessonId;
    this.you = null;
    this.mine = new Set();
    this.role = null;
    this.state = 'connecting';
    this.roster = [];
    this.waiting = [];
    this.status = null;
    this.me = { permissions: {}, sources_on: [], forwarded: [] };
    this.chat = [];
    this.notice = '';
    this.signal = new Signal(lessonId, {
      message: (tag, body) => this.handle(tag, body),
      failed: e => {
        this.notice = `Something went wrong: ${e.message}`;
        this.render();
      },
      refused: text => {
        this.setState('refused');
        this.notice = text;
        this.render();
      },
      connecting: () => this.render(),
      closed: code => this.lost(code),
    });
    this.media = new Media({
      send: msg => this.send(msg),
      changed: () => this.render(),
      captureFailed: (source, e) => { this.notice = `Could not use your ${LABEL[source].toLowerCase()}: ${e.message}`; },
      // The signaling closes as lost (4100 is not final): the page rejoins
      // and builds a new media connection.
      failed: () => {
        this.notice = 'The media connection failed: rejoining…';
        this.signal.close(4100, 'media failed');
      },
    });
    this.view = new LessonView(root, this);
    window.chaperone = this; // for people debugging, and the browser tests
  }

  get ws() { return this.signal.ws; }
  get pc() { return this.media.pc; }

  setState(state) {
    this.state = state;
    document.body.dataset.lessonState = state;
  }

  async start() {
    this.setState('connecting');
    await this.signal.start();
  }

  // The connection closed (`code`), or could not be made (null). Unless the
  // lesson said goodbye or the gateway refused for good, the page rejoins by
  // itself: within the reconnect grace the gateway lets an admitted person
  // straight back in, and a waiting one back to the waiting room.
  lost(code) {
    this.media.stop();
    if (this.state === 'ended' || this.state === 'refused') return this.render();
    if (this.signal.rejoinAfter(code)) {
      this.setState('reconnecting');
      this.notice = 'Connection lost: rejoining the lesson…';
    } else {
      this.setState('disconnected');
      this.notice = `Connection closed${code ? ` (${code})` : ''}. Reload the page to rejoin.`;
    }
    this.render();
  }

  send(msg) { this.signal.send(msg); }
  render() { this.view.render(); }
  inbound() { return this.media.inbound(); }

  isStaff() { return this.role === 'teacher' || this.role === 'assistant'; }

  // One message from the gateway, in order (the next waits for this one).
  async handle(tag, body) {
    switch (tag) {
      case 'welcome':
        this.you = body.you; this.role = body.role;
        this.mine.add(body.you); // every id this page has had (rejoining gives a new one)
        document.body.dataset.lessonRole = body.role;
        break;
      case 'waiting': this.setState('waiting'); break;
      case 'admitted':
        this.setState('admitted');
        if (this.signal.rejoined()) this.notice = 'You are back in the lesson.';
        await this.media.start({ iceServers: this.signal.iceServers, publish: this.isStaff(), send: this.role !== 'observer' });
        // Back after a lost connection: take part as chosen before (what the
        // teacher turned off stays off: it left the choice when it happened).
        if (this.role === 'pupil' && this.media.engagement !== 'chat_only') await this.media.setEngagement(this.media.engagement);
        break;
      case 'roster': this.roster = body.participants; break;
      case 'waiting_list': this.waiting = body.waiting; break;
      case 'you': this.me = body; break;
      case 'status': this.status = body; break;
      case 'control_changed': {
        const verb = body.granted ? 'allowed' : (body.revoked ? 'revoked' : 'turned off');
        this.notice = `Your teacher ${verb}: ${LABEL[body.permission] || body.permission}.`;
        // The server already stopped forwarding it; stop capturing it here too.
        if (!body.granted) await this.media.stopLocal(body.permission);
        break;
      }
      case 'chat': this.chat.push(body); break;
      case 'banner':
        this.notice = body.kind === 'teacher_camera_off' ? 'Your camera has been off too long: pupils should be able to see you.' : '';
        break;
      case 'concern_received': this.notice = 'Your concern was sent to the safeguarding lead.'; break;
      case 'error':
        this.notice = `Refused: ${body.code.replaceAll('_', ' ')}${body.action ? ` (${body.action.replaceAll('_', ' ')})` : ''}.`;
        document.body.dataset.lastError = body.code;
        break;
      case 'offer': await this.media.handleOffer(body.sdp); break;
      case 'answer': await this.media.handleAnswer(body.sdp); break;
      case 'goodbye':
        this.setState('ended');
        this.notice = {
          denied: 'Your teacher did not let you in.', removed: 'You were removed from the lesson.',
          blocked: 'Your access has been blocked.', ended: 'The lesson has ended.', replaced: 'You joined from another window.',
          access_ended: 'Your visitor access has ended.',
        }[body.reason] || 'You left the lesson.';
        break;
      default: break;
    }
    this.render();
  }
}
