// The lesson's signaling: a fresh room token for every connection, the
// WebSocket to the gateway, the hello, the protocol's messages (what the
// page may say, and how what it hears is tagged), messages handed on one at
// a time and in order, and rejoining with backoff after a lost connection
// unless the close was final. It knows nothing of media or of the page and
// never decides what a message means: it reports to the handlers it is given.

import { request } from './common.js';

// Close codes after which rejoining cannot help: the lesson ended (1000),
// the client is out of date or misbehaved (4001, 4002, 4008), the person is
// refused or was replaced by another window (4003, 4004, 4009).
const FINAL_CLOSES = new Set([1000, 4001, 4002, 4003, 4004, 4008, 4009]);
// Attempts after a lost connection before asking the person to reload.
const MAX_REJOINS = 6;
// The protocol version this page speaks (`PROTOCOL_VERSION` in the protocol crate).
const VERSION = 1;

// Every message the page sends, as the gateway's `ClientMsg` spells it
// (externally tagged: "admit_all" or {"admit": {...}}). `target` is
// { one: id } or 'all_pupils'.
export const ClientMsg = {
  hello: () => ({ hello: { version: VERSION } }),
  admit: participant => ({ admit: { participant } }),
  admitAll: () => 'admit_all',
  deny: participant => ({ deny: { participant } }),
  remove: participant => ({ remove: { participant } }),
  lock: locked => ({ lock: { locked } }),
  setPermission: (target, permission, granted) => ({ set_permission: { target, permission, granted } }),
  turnOff: (target, source) => ({ turn_off: { target, source } }),
  setChatPolicy: (publicChat, privateChat) => ({ set_chat_policy: { public_chat: publicChat, private_chat: privateChat } }),
  flagIncident: note => ({ flag_incident: { note } }),
  endLesson: () => 'end_lesson',
  setEngagement: engagement => ({ set_engagement: { engagement } }),
  setSource: (source, on) => ({ set_source: { source, on } }),
  // Public without `to`, otherwise private to that participant.
  chat: (text, to) => (to === undefined ? { chat: { text } } : { chat: { to, text } }),
  reportConcern: text => ({ report_concern: { text } }),
  raiseHand: raised => ({ raise_hand: { raised } }),
  lowerHand: target => ({ lower_hand: { target } }),
  showHands: visible => ({ show_hands: { visible } }),
  // Annotation: `stroke` is { tool, colour: '#rrggbb', width, points: [[x, y]], text? }.
  draw: (layer, stroke) => ({ draw: { layer, stroke } }),
  extendMark: points => ({ extend_mark: { points } }),
  undoMark: () => 'undo_mark',
  redoMark: () => 'redo_mark',
  eraseMark: mark => ({ erase_mark: { mark } }),
  clearMarks: author => (author === undefined ? { clear_marks: {} } : { clear_marks: { author } }),
  isolateMarks: isolated => ({ isolate_marks: { isolated } }),
  offer: sdp => ({ offer: { sdp } }),
  answer: sdp => ({ answer: { sdp } }),
};

// A message from the gateway as [tag, body]: "admitted" is ["admitted",
// null], {"welcome": {...}} is ["welcome", {...}].
export function tagOf(msg) {
  if (typeof msg === 'string') return [msg, null];
  const [tag] = Object.keys(msg);
  return [tag, msg[tag]];
}

export class Signal {
  // `hooks`:
  //   message(tag, body)  a message; may be async, and the next waits for it
  //   failed(error)       a message could not be handled
  //   refused(text, code, body) no room token: the gateway's reason, its
  //                       code and the whole answer (`opens_at_ms` for not_open)
  //   connecting()        a connection is being opened
  //   closed(code)        the connection closed (`code`) or none could be made (null)
  constructor(lessonId, hooks) {
    this.lessonId = lessonId;
    this.hooks = hooks;
    this.ws = null;
    this.iceServers = [];
    this.rejoins = 0;
  }

  async start() {
    this.rejoins = 0;
    await this.connect();
  }

  // One signaling connection, with a fresh room token (the gateway checks
  // the person's session and blocks again on every connection).
  async connect() {
    const res = await request(`/api/lessons/${this.lessonId}/token`, {}).catch(() => null);
    if (!res) return this.lost(null);
    const data = await res.json().catch(() => ({}));
    if (!res.ok) return this.hooks.refused(data.message || 'This lesson is not available to you.', data.error, data);
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${data.ws_path}`;
    this.iceServers = data.ice_servers || [];
    const ws = new WebSocket(url, ['chaperone.v1', `chaperone.token.${data.token}`]);
    this.ws = ws;
    ws.onopen = () => this.send(ClientMsg.hello());
    // Messages are handled one at a time, in order: an SDP offer from the
    // SFU must not be applied while our own offer/answer is half done.
    this.inbox = Promise.resolve();
    ws.onmessage = ev => {
      if (this.ws !== ws) return; // a connection this page has given up on
      const msg = JSON.parse(ev.data);
      this.inbox = this.inbox.then(() => this.hooks.message(...tagOf(msg))).catch(e => this.hooks.failed(e));
    };
    ws.onclose = ev => { if (this.ws === ws) this.lost(ev.code); };
    this.hooks.connecting();
  }

  lost(code) {
    this.ws = null;
    this.hooks.closed(code);
  }

  // After a lost connection: schedules the next attempt, backing off, and
  // returns true; false when rejoining cannot help (a final close code, or
  // too many attempts). Within the reconnect grace the gateway lets an
  // admitted person straight back in, and a waiting one back to the
  // waiting room.
  rejoinAfter(code) {
    if (FINAL_CLOSES.has(code) || this.rejoins >= MAX_REJOINS) return false;
    const delay = Math.min(500 * 2 ** this.rejoins, 8000);
    this.rejoins += 1;
    setTimeout(() => this.connect(), delay);
    return true;
  }

  // In the lesson again: the next loss backs off afresh. True if this
  // followed a lost connection.
  rejoined() {
    const was = this.rejoins > 0;
    this.rejoins = 0;
    return was;
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  // Closes the connection as lost (`code` is not final), so the page rejoins.
  close(code, reason) {
    this.ws?.close(code, reason);
  }

  // Leaves for good: the connection closes and nothing rejoins.
  leave() {
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, 'left');
  }
}
