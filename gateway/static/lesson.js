// The live lesson page, for teachers, pupils and observers. Plain ES
// module, no build step. The server decides everything (who is admitted,
// what is forwarded, who may chat with whom); this page only shows what it
// is told and asks for what the person clicks. A control that this page
// hides is still enforced by the gateway.

const SOURCES = ['microphone', 'camera', 'screen_share'];
const PERMISSIONS = ['microphone', 'camera', 'screen_share', 'annotate'];
const LABEL = { microphone: 'Mic', camera: 'Camera', screen_share: 'Screen share', annotate: 'Annotate' };
// Close codes after which rejoining cannot help: the lesson ended (1000),
// the client is out of date or misbehaved (4001, 4002, 4008), the person is
// refused or was replaced by another window (4003, 4004, 4009).
const FINAL_CLOSES = new Set([1000, 4001, 4002, 4003, 4004, 4008, 4009]);
// Attempts after a lost connection before asking the person to reload.
const MAX_REJOINS = 6;
const ENGAGEMENTS = [
  ['chat_only', 'Chat only'],
  ['voice_chat', 'Voice and chat'],
  ['chat_camera', 'Chat and camera'],
  ['voice_chat_camera', 'Voice, chat and camera'],
];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// Parses the gateway's externally tagged messages: "admitted" or {"welcome": {...}}.
// A remote track's id names its participant and source ("p3/camera", or
// "p3camera" where the browser drops the slash); returned as "p3/camera".
export function trackKey(id) {
  const m = /^p(\d+)\/?(microphone|camera|screen_share)$/.exec(id || '');
  return m ? { key: `p${m[1]}/${m[2]}`, participant: Number(m[1]), source: m[2] } : null;
}

function tagOf(msg) {
  if (typeof msg === 'string') return [msg, null];
  const [tag] = Object.keys(msg);
  return [tag, msg[tag]];
}

export class LessonClient {
  constructor(root, lessonId) {
    this.root = root;
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
    this.remote = new Map(); // track id ("p3/camera") -> {stream, source, participant}
    this.local = { microphone: null, camera: null, screen_share: null };
    this.pc = null;
    this.senders = {};
    this.engagement = 'chat_only';
    this.elements = new Map(); // media elements kept across renders, by key
    window.chaperone = this; // for people debugging, and the browser tests
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

  setState(state) {
    this.state = state;
    document.body.dataset.lessonState = state;
  }

  async start() {
    this.setState('connecting');
    this.rejoins = 0;
    await this.connect();
  }

  // One signaling connection, with a fresh room token (the gateway checks
  // the person's session and blocks again on every connection).
  async connect() {
    const res = await fetch(`/api/lessons/${this.lessonId}/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }).catch(() => null);
    if (!res) return this.lost(null);
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      this.setState('refused');
      this.notice = data.message || 'This lesson is not available to you.';
      return this.render();
    }
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${data.ws_path}`;
    this.iceServers = data.ice_servers || [];
    const ws = new WebSocket(url, ['chaperone.v1', `chaperone.token.${data.token}`]);
    this.ws = ws;
    ws.onopen = () => this.send({ hello: { version: 1 } });
    // Messages are handled one at a time, in order: an SDP offer from the
    // SFU must not be applied while our own offer/answer is half done.
    this.inbox = Promise.resolve();
    ws.onmessage = ev => {
      if (this.ws !== ws) return; // a connection this page has given up on
      const msg = JSON.parse(ev.data);
      this.inbox = this.inbox.then(() => this.onMessage(msg)).catch(e => {
        this.notice = `Something went wrong: ${e.message}`;
        this.render();
      });
    };
    ws.onclose = ev => { if (this.ws === ws) this.lost(ev.code); };
    this.render();
  }

  // The connection closed (`code`), or could not be made (null). Unless the
  // lesson said goodbye or the gateway refused for good, the page rejoins by
  // itself: within the reconnect grace the gateway lets an admitted person
  // straight back in, and a waiting one back to the waiting room.
  lost(code) {
    this.stopMedia();
    this.ws = null;
    if (this.state === 'ended' || this.state === 'refused') return this.render();
    if (!FINAL_CLOSES.has(code) && this.rejoins < MAX_REJOINS) {
      const delay = Math.min(500 * 2 ** this.rejoins, 8000);
      this.rejoins += 1;
      this.setState('reconnecting');
      this.notice = 'Connection lost: rejoining the lesson…';
      setTimeout(() => this.connect(), delay);
    } else {
      this.setState('disconnected');
      this.notice = `Connection closed${code ? ` (${code})` : ''}. Reload the page to rejoin.`;
    }
    this.render();
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  isStaff() { return this.role === 'teacher' || this.role === 'assistant'; }
  nameOf(id) { return (this.roster.find(p => p.id === id) || this.waiting.find(p => p.id === id) || { name: `#${id}` }).name; }

  async onMessage(msg) {
    const [tag, body] = tagOf(msg);
    switch (tag) {
      case 'welcome':
        this.you = body.you; this.role = body.role;
        this.mine.add(body.you); // every id this page has had (rejoining gives a new one)
        document.body.dataset.lessonRole = body.role;
        break;
      case 'waiting': this.setState('waiting'); break;
      case 'admitted':
        this.setState('admitted');
        if (this.rejoins) this.notice = 'You are back in the lesson.';
        this.rejoins = 0;
        await this.startMedia();
        // Back after a lost connection: take part as chosen before (what the
        // teacher turned off stays off: it left the choice when it happened).
        if (this.role === 'pupil' && this.engagement !== 'chat_only') await this.setEngagement(this.engagement);
        break;
      case 'roster': this.roster = body.participants; break;
      case 'waiting_list': this.waiting = body.waiting; break;
      case 'you': this.me = body; break;
      case 'status': this.status = body; break;
      case 'control_changed': {
        const verb = body.granted ? 'allowed' : (body.revoked ? 'revoked' : 'turned off');
        this.notice = `Your teacher ${verb}: ${LABEL[body.permission] || body.permission}.`;
        // The server already stopped forwarding it; stop capturing it here too.
        if (!body.granted) await this.stopLocal(body.permission);
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
      case 'offer': await this.onServerOffer(body.sdp); break;
      case 'answer': await this.pc?.setRemoteDescription({ type: 'answer', sdp: body.sdp }); break;
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

  // --- media ---------------------------------------------------------------

  async startMedia() {
    if (this.pc) return;
    // Staff publish from the start: their camera and microphone are captured
    // before the offer, so the tracks are there when it is negotiated.
    if (this.isStaff()) {
      for (const source of ['microphone', 'camera']) {
        try { this.local[source] = await this.capture(source); } catch (e) { this.notice = `Could not use your ${LABEL[source].toLowerCase()}: ${e.message}`; }
      }
    }
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: this.iceServers });
    this.pc = pc;
    // m-line order is the source mapping the SFU uses: audio = microphone,
    // first video = camera, second video = screen share.
    if (this.role !== 'observer') {
      this.senders.microphone = pc.addTransceiver(this.local.microphone || 'audio', { direction: 'sendonly' }).sender;
      this.senders.camera = pc.addTransceiver(this.local.camera || 'video', { direction: 'sendonly' }).sender;
      this.senders.screen_share = pc.addTransceiver('video', { direction: 'sendonly' }).sender;
    }
    // A media connection that fails (ICE or DTLS) does not come back by
    // itself: rejoin, which builds a new one.
    pc.onconnectionstatechange = () => {
      if (this.pc === pc && pc.connectionState === 'failed') {
        this.notice = 'The media connection failed: rejoining…';
        this.ws?.close(4100, 'media failed');
      }
    };
    pc.ontrack = ev => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      const t = trackKey(ev.track.id); // from the SFU's msid: never an address or a name
      if (!t) return;
      this.remote.set(t.key, { stream, source: t.source, participant: t.participant, track: ev.track });
      ev.track.onended = () => { this.remote.delete(t.key); this.render(); };
      this.render();
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this.send({ offer: { sdp: pc.localDescription.sdp } });
    for (const source of ['microphone', 'camera']) if (this.local[source]) this.send({ set_source: { source, on: true } });
  }

  async onServerOffer(sdp) {
    if (!this.pc) return;
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.send({ answer: { sdp: this.pc.localDescription.sdp } });
  }

  async capture(source) {
    if (source === 'screen_share') {
      const s = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      const track = s.getVideoTracks()[0];
      track.onended = () => this.setSource('screen_share', false);
      return track;
    }
    const s = await navigator.mediaDevices.getUserMedia(source === 'microphone' ? { audio: true } : { video: { width: 640, height: 360 } });
    return source === 'microphone' ? s.getAudioTracks()[0] : s.getVideoTracks()[0];
  }

  // Switch one of my sources; the server decides whether it is forwarded.
  async setSource(source, on) {
    if (!this.senders[source]) return;
    try {
      if (on && !this.local[source]) this.local[source] = await this.capture(source);
      if (!on && this.local[source]) { this.local[source].stop(); this.local[source] = null; }
      await this.senders[source].replaceTrack(on ? this.local[source] : null);
    } catch (e) {
      this.notice = `Could not use your ${LABEL[source].toLowerCase()}: ${e.message}`;
    }
    this.send({ set_source: { source, on } });
    this.render();
  }

  // Stops capturing one of my sources (after the teacher turned it off).
  async stopLocal(source) {
    if (!this.local[source]) return;
    this.local[source].stop();
    this.local[source] = null;
    await this.senders[source]?.replaceTrack(null);
    if (source === 'microphone' || source === 'camera') {
      const other = source === 'microphone' ? this.local.camera : this.local.microphone;
      this.engagement = other ? (source === 'microphone' ? 'chat_camera' : 'voice_chat') : 'chat_only';
    }
  }

  async setEngagement(engagement) {
    this.engagement = engagement;
    this.send({ set_engagement: { engagement } });
    const wants = { microphone: engagement === 'voice_chat' || engagement === 'voice_chat_camera', camera: engagement === 'chat_camera' || engagement === 'voice_chat_camera' };
    for (const source of ['microphone', 'camera']) {
      if (wants[source] && !this.local[source]) {
        try {
          this.local[source] = await this.capture(source);
          await this.senders[source].replaceTrack(this.local[source]);
        } catch (e) { this.notice = `Could not use your ${LABEL[source].toLowerCase()}: ${e.message}`; }
      } else if (!wants[source] && this.local[source]) {
        this.local[source].stop();
        this.local[source] = null;
        await this.senders[source].replaceTrack(null);
      }
    }
    this.render();
  }

  stopMedia() {
    for (const s of SOURCES) { this.local[s]?.stop(); this.local[s] = null; }
    this.pc?.close();
    this.pc = null;
    this.remote.clear();
  }

  // Inbound media figures per remote track, for the tests and for people debugging.
  async inbound() {
    if (!this.pc) return [];
    const out = [];
    (await this.pc.getStats()).forEach(r => {
      if (r.type === 'inbound-rtp') out.push({ track: trackKey(r.trackIdentifier)?.key || r.trackIdentifier, kind: r.kind, bytes: r.bytesReceived || 0, packets: r.packetsReceived || 0, frames: r.framesDecoded || 0 });
    });
    return out;
  }

  // --- view ----------------------------------------------------------------

  // A media element for `stream`, reused across renders so playback never restarts.
  media(tag, key, stream, attrs = {}) {
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
    return this.media('video', attrs['data-track'] || attrs.id, stream, attrs);
  }

  selfStream() {
    if (!this.self || this.self.getVideoTracks()[0] !== this.local.camera) this.self = new MediaStream([this.local.camera]);
    return this.self;
  }

  statusBar() {
    const s = this.status;
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
    const area = el('div', { class: 'media' });
    const teacherIds = this.roster.filter(p => p.role === 'teacher' || p.role === 'assistant').map(p => p.id);
    const tracks = [...this.remote.entries()];
    const videos = tracks.filter(([, t]) => t.source !== 'microphone');
    const audios = tracks.filter(([, t]) => t.source === 'microphone');
    const main = videos.filter(([, t]) => teacherIds.includes(t.participant) && t.source === 'camera');
    const screens = videos.filter(([, t]) => t.source === 'screen_share');
    const others = videos.filter(([, t]) => !teacherIds.includes(t.participant) && t.source === 'camera');
    for (const [id, t] of screens) area.append(el('figure', { class: 'screen' }, this.video(t.stream, { 'data-track': id }), el('figcaption', {}, `${this.nameOf(t.participant)}: screen`)));
    for (const [id, t] of main) area.append(el('figure', { class: 'main' }, this.video(t.stream, { 'data-track': id }), el('figcaption', {}, this.nameOf(t.participant))));
    const grid = el('div', { class: 'grid' });
    for (const [id, t] of others) grid.append(el('figure', {}, this.video(t.stream, { 'data-track': id }), el('figcaption', {}, this.nameOf(t.participant))));
    if (this.local.camera) grid.append(el('figure', { class: 'self' }, this.video(this.selfStream(), { id: 'self-view' }), el('figcaption', {}, 'You')));
    area.append(grid);
    for (const [id, t] of audios) area.append(this.media('audio', id, t.stream, { 'data-track': id }));
    if (!main.length && this.role === 'pupil') area.prepend(el('p', { class: 'muted' }, 'The teacher’s video appears here.'));
    return area;
  }

  chatPanel() {
    const log = el('ol', { id: 'chat-log', class: 'chat' }, ...this.chat.map(m => el('li', { 'data-from': m.from, 'data-private': m.to != null ? 'true' : 'false' },
      el('strong', {}, m.from_name), m.to != null ? el('em', {}, ` (private to ${this.mine.has(m.to) ? 'you' : this.nameOf(m.to)})`) : '', `: ${m.text}`)));
    const to = el('select', { id: 'chat-to', 'aria-label': 'Send to' }, el('option', { value: '' }, 'Everyone'));
    // Pupils may write privately to staff only; the server refuses anything else.
    const targets = this.roster.filter(p => p.id !== this.you && (this.isStaff() ? true : (p.role === 'teacher' || p.role === 'assistant')));
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
      const msg = to.value ? { chat: { to: Number(to.value), text } } : { chat: { text } };
      this.send(msg);
      input.value = '';
      this.chatDraft = '';
    } }, to, input, el('button', { id: 'chat-send', type: 'submit' }, 'Send'));
    return el('section', { class: 'chat-panel', 'aria-label': 'Chat' }, el('h2', {}, 'Chat'), log, form);
  }

  pupilControls() {
    const select = el('select', { id: 'engagement', 'aria-label': 'How I take part', onchange: ev => this.setEngagement(ev.target.value) },
      ...ENGAGEMENTS.map(([v, l]) => el('option', { value: v, selected: v === this.engagement }, l)));
    const share = this.me.permissions.screen_share
      ? el('button', { id: 'share-screen', type: 'button', onclick: () => this.setSource('screen_share', !this.local.screen_share) }, this.local.screen_share ? 'Stop sharing' : 'Share my screen')
      : null;
    const concern = el('button', { id: 'report-concern', type: 'button', class: 'secondary', onclick: () => {
      const text = prompt('What worries you? This goes privately to the safeguarding lead.');
      if (text && text.trim()) this.send({ report_concern: { text: text.trim() } });
    } }, 'Report a concern');
    const perms = PERMISSIONS.filter(p => this.me.permissions[p]).map(p => LABEL[p]).join(', ') || 'none';
    return el('section', { class: 'controls', 'aria-label': 'My controls' },
      el('label', {}, 'How I take part ', select), share, concern,
      el('p', { class: 'muted', id: 'my-permissions' }, `Allowed: ${perms}. On: ${this.me.sources_on.map(s => LABEL[s]).join(', ') || 'nothing'}.`));
  }

  teacherControls() {
    const waiting = el('section', { id: 'waiting', 'aria-label': 'Waiting room' }, el('h2', {}, `Waiting room (${this.waiting.length})`),
      this.waiting.length ? el('button', { id: 'admit-all', type: 'button', onclick: () => this.send('admit_all') }, 'Admit all') : el('p', { class: 'muted' }, 'Nobody is waiting.'),
      el('ul', {}, ...this.waiting.map(w => el('li', { 'data-waiting': w.id }, `${w.name} `,
        el('button', { type: 'button', 'data-admit': w.id, onclick: () => this.send({ admit: { participant: w.id } }) }, 'Admit'), ' ',
        el('button', { type: 'button', class: 'secondary', 'data-deny': w.id, onclick: () => this.send({ deny: { participant: w.id } }) }, 'Deny')))));
    const pupils = this.roster.filter(p => p.role === 'pupil');
    const rows = pupils.map(p => el('tr', { 'data-participant': p.id },
      el('td', {}, p.name),
      el('td', {}, p.forwarded.map(s => LABEL[s]).join(', ') || '—'),
      el('td', {}, ...PERMISSIONS.map(perm => el('label', { class: 'toggle' },
        el('input', { type: 'checkbox', 'data-permission': perm, 'data-participant': p.id, checked: !!p.permissions[perm], onchange: ev => this.send({ set_permission: { target: { one: p.id }, permission: perm, granted: ev.target.checked } }) }),
        ` ${LABEL[perm]} `))),
      el('td', {},
        el('button', { type: 'button', 'data-action': 'mic-off', 'data-participant': p.id, onclick: () => this.send({ turn_off: { target: { one: p.id }, source: 'microphone' } }) }, 'Mic off'), ' ',
        el('button', { type: 'button', 'data-action': 'camera-off', 'data-participant': p.id, onclick: () => this.send({ turn_off: { target: { one: p.id }, source: 'camera' } }) }, 'Camera off'), ' ',
        el('button', { type: 'button', class: 'secondary', 'data-action': 'remove', 'data-participant': p.id, onclick: () => { if (confirm(`Remove ${p.name}?`)) this.send({ remove: { participant: p.id } }); } }, 'Remove'))));
    const s = this.status || {};
    const roster = el('section', { id: 'participants', 'aria-label': 'Participants' }, el('h2', {}, `Pupils (${pupils.length})`),
      el('p', {},
        el('button', { id: 'all-mics-off', type: 'button', onclick: () => this.send({ turn_off: { target: 'all_pupils', source: 'microphone' } }) }, 'All mics off'), ' ',
        el('button', { id: 'all-cams-off', type: 'button', onclick: () => this.send({ turn_off: { target: 'all_pupils', source: 'camera' } }) }, 'All cameras off')),
      el('table', {}, el('tr', {}, el('th', {}, 'Pupil'), el('th', {}, 'Live'), el('th', {}, 'Allowed'), el('th', {}, '')), ...rows));
    const lesson = el('section', { id: 'lesson-controls', 'aria-label': 'Lesson controls' }, el('h2', {}, 'Lesson'),
      el('label', { class: 'toggle' }, el('input', { id: 'public-chat', type: 'checkbox', checked: s.public_chat !== false, onchange: ev => this.send({ set_chat_policy: { public_chat: ev.target.checked, private_chat: s.private_chat !== false } }) }), ' Pupils’ public chat'), ' ',
      el('label', { class: 'toggle' }, el('input', { id: 'private-chat', type: 'checkbox', checked: s.private_chat !== false, onchange: ev => this.send({ set_chat_policy: { public_chat: s.public_chat !== false, private_chat: ev.target.checked } }) }), ' Pupils’ private messages'), ' ',
      el('label', { class: 'toggle' }, el('input', { id: 'lock', type: 'checkbox', checked: !!s.locked, onchange: ev => this.send({ lock: { locked: ev.target.checked } }) }), ' Lock waiting room'),
      el('p', {},
        el('button', { id: 'camera-toggle', type: 'button', onclick: () => this.setSource('camera', !this.local.camera) }, this.local.camera ? 'Turn my camera off' : 'Turn my camera on'), ' ',
        el('button', { id: 'mic-toggle', type: 'button', onclick: () => this.setSource('microphone', !this.local.microphone) }, this.local.microphone ? 'Mute me' : 'Unmute me'), ' ',
        el('button', { id: 'share-screen', type: 'button', onclick: () => this.setSource('screen_share', !this.local.screen_share) }, this.local.screen_share ? 'Stop sharing' : 'Share my screen'), ' ',
        el('button', { id: 'flag-incident', type: 'button', class: 'secondary', onclick: () => {
          const note = prompt('Describe the incident (recorded for the safeguarding lead):');
          if (note && note.trim()) this.send({ flag_incident: { note: note.trim() } });
        } }, 'Flag incident'), ' ',
        el('button', { id: 'end-lesson', type: 'button', class: 'danger', onclick: () => { if (confirm('End the lesson for everyone?')) this.send('end_lesson'); } }, 'End lesson')),
      !this.local.camera ? el('p', { class: 'warning', id: 'camera-warning' }, 'Your camera is off: pupils cannot see you.') : null);
    return [waiting, roster, lesson];
  }

  render() {
    if (this.pressed) {
      this.renderWaiting = true;
      return;
    }
    this.renderWaiting = false;
    const parts = [el('h1', {}, 'Lesson'), this.statusBar()];
    if (this.notice) parts.push(el('p', { id: 'notice', class: 'notice', role: 'alert' }, this.notice));
    if (this.state === 'waiting') {
      parts.push(el('section', { id: 'waiting-room' }, el('h2', {}, 'Waiting room'), el('p', {}, 'Your teacher will let you in soon. You cannot see or hear the lesson until then.')));
    } else if (this.state === 'admitted') {
      parts.push(this.mediaArea());
      if (this.isStaff()) parts.push(...this.teacherControls());
      else if (this.role === 'pupil') parts.push(this.pupilControls());
      else parts.push(el('p', { class: 'muted' }, 'You are observing: you can see and hear the lesson, and everyone can see that an observer is present.'));
      parts.push(this.chatPanel());
    } else if (this.state === 'connecting') {
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
