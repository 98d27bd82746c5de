// The lesson's media: the RTCPeerConnection to the SFU, the local tracks
// (microphone, camera, screen share) and the pupil's choice of how to take
// part, the offer when admitted and the answers to the SFU's renegotiation
// offers, the remote tracks by participant and source, and what happens when
// the media connection fails. It never decides what is forwarded (the server
// does, and a source this page turns on may still not be), and it never
// renders: it reports to the handlers it is given.

import { ClientMsg } from './lesson-signal.js';

const SOURCES = ['microphone', 'camera', 'screen_share'];

// Simulcast: the camera goes out as three layers and the screen share as
// two, lowest first; the SFU gives each subscriber the layers its link
// carries (rids l < m < h, see the README's "Simulcast and layer selection").
// The camera is captured at 640x360 and 720p where the device allows: the
// layers are about 180p, 360p and 720p at most.
export const CAMERA_LAYERS = [
  { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150_000, maxFramerate: 15 },
  { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 450_000 },
  { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
];
export const SCREEN_LAYERS = [
  { rid: 'l', scaleResolutionDownBy: 2, maxBitrate: 200_000, maxFramerate: 5 },
  { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1_000_000 },
];

// A remote track's id names its participant and source ("p3/camera", or
// "p3camera" where the browser drops the slash); returned as "p3/camera".
export function trackKey(id) {
  const m = /^p(\d+)\/?(microphone|camera|screen_share)$/.exec(id || '');
  return m ? { key: `p${m[1]}/${m[2]}`, participant: Number(m[1]), source: m[2] } : null;
}

export class Media {
  // `hooks`:
  //   send(msg)                    a protocol message for the gateway
  //   changed()                    what there is to show changed
  //   captureFailed(source, error) a camera, microphone or screen could not be used
  //   failed()                     the media connection failed for good
  constructor(hooks) {
    this.hooks = hooks;
    this.pc = null;
    this.senders = {};
    this.local = { microphone: null, camera: null, screen_share: null };
    this.remote = new Map(); // track id ("p3/camera") -> {stream, source, participant, track}
    this.engagement = 'chat_only';
    // The camera and microphone chosen before joining (device ids; empty: the default).
    this.devices = { camera: '', microphone: '' };
  }

  // Once admitted. `publish`: capture camera and microphone before the
  // offer (staff publish from the start, so the tracks are there when it is
  // negotiated). `send`: offer sending m-lines (everyone but an observer).
  async start({ iceServers, publish, send }) {
    if (this.pc) return;
    if (publish) {
      for (const source of ['microphone', 'camera']) {
        try { this.local[source] = await this.capture(source); } catch (e) { this.hooks.captureFailed(source, e); }
      }
    }
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers });
    this.pc = pc;
    // m-line order is the source mapping the SFU uses: audio = microphone,
    // first video = camera, second video = screen share.
    if (send) {
      this.senders.microphone = pc.addTransceiver(this.local.microphone || 'audio', { direction: 'sendonly' }).sender;
      this.senders.camera = pc.addTransceiver(this.local.camera || 'video', { direction: 'sendonly', sendEncodings: CAMERA_LAYERS }).sender;
      this.senders.screen_share = pc.addTransceiver('video', { direction: 'sendonly', sendEncodings: SCREEN_LAYERS }).sender;
    }
    // A media connection that fails (ICE or DTLS) does not come back by
    // itself: the page rejoins, which builds a new one.
    pc.onconnectionstatechange = () => {
      if (this.pc === pc && pc.connectionState === 'failed') this.hooks.failed();
    };
    // Which path the media takes (direct, or relayed by TURN over UDP, TCP
    // or TLS), checked every 2 s: ICE may move to another pair.
    this.currentPath = null;
    clearInterval(this.pathTimer);
    this.pathTimer = setInterval(async () => {
      if (this.pc !== pc) return;
      const path = await this.path().catch(() => null);
      if (this.pc === pc && path !== this.currentPath) {
        this.currentPath = path;
        this.hooks.changed();
      }
    }, 2000);
    pc.ontrack = ev => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      const t = trackKey(ev.track.id); // from the SFU's msid: never an address or a name
      if (!t) return;
      this.remote.set(t.key, { stream, source: t.source, participant: t.participant, track: ev.track });
      ev.track.onended = () => { this.remote.delete(t.key); this.hooks.changed(); };
      this.hooks.changed();
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this.hooks.send(ClientMsg.offer(pc.localDescription.sdp));
    for (const source of ['microphone', 'camera']) if (this.local[source]) this.hooks.send(ClientMsg.setSource(source, true));
  }

  // The SFU renegotiates (a track added or gone): answer its offer.
  async handleOffer(sdp) {
    if (!this.pc) return;
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.hooks.send(ClientMsg.answer(this.pc.localDescription.sdp));
  }

  async handleAnswer(sdp) {
    await this.pc?.setRemoteDescription({ type: 'answer', sdp });
  }

  async capture(source) {
    if (source === 'screen_share') {
      const s = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      const track = s.getVideoTracks()[0];
      track.onended = () => this.setSource('screen_share', false);
      return track;
    }
    const device = id => (id ? { deviceId: { exact: id } } : {});
    const s = await navigator.mediaDevices.getUserMedia(source === 'microphone'
      ? { audio: this.devices.microphone ? device(this.devices.microphone) : true }
      : { video: { width: { ideal: 1280 }, height: { ideal: 720 }, ...device(this.devices.camera) } });
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
      this.hooks.captureFailed(source, e);
    }
    this.hooks.send(ClientMsg.setSource(source, on));
    this.hooks.changed();
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

  // A pupil's choice of how to take part: told to the gateway, and the
  // microphone and camera captured or stopped to match.
  async setEngagement(engagement) {
    this.engagement = engagement;
    this.hooks.send(ClientMsg.setEngagement(engagement));
    const wants = { microphone: engagement === 'voice_chat' || engagement === 'voice_chat_camera', camera: engagement === 'chat_camera' || engagement === 'voice_chat_camera' };
    for (const source of ['microphone', 'camera']) {
      if (wants[source] && !this.local[source]) {
        try {
          this.local[source] = await this.capture(source);
          await this.senders[source].replaceTrack(this.local[source]);
        } catch (e) { this.hooks.captureFailed(source, e); }
      } else if (!wants[source] && this.local[source]) {
        this.local[source].stop();
        this.local[source] = null;
        await this.senders[source].replaceTrack(null);
      }
    }
    this.hooks.changed();
  }

  // The connection is gone: stop capturing and drop every track (a rejoin
  // starts afresh).
  stop() {
    for (const s of SOURCES) { this.local[s]?.stop(); this.local[s] = null; }
    this.pc?.close();
    this.pc = null;
    clearInterval(this.pathTimer);
    this.currentPath = null;
    this.remote.clear();
  }

  // The path the media connection uses now, from the selected candidate
  // pair (getStats): 'direct-udp' (straight to the SFU), 'direct-tcp',
  // 'turn-udp', 'turn-tcp' or 'turn-tls' (through the school's TURN
  // relay, reached over UDP, TCP or TLS), or null while none is selected.
  // Shown in the lesson's connection details; people debugging a school's
  // firewall ask for it first.
  async path() {
    const pc = this.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach(r => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId) || pair;
    });
    if (!pair) stats.forEach(r => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
    const local = pair && stats.get(pair.localCandidateId);
    if (!local) return null;
    if (local.candidateType === 'relay') return `turn-${local.relayProtocol || 'udp'}`;
    return `direct-${local.protocol || 'udp'}`;
  }

  // Inbound media figures per remote track, for the tests and for people debugging.
  async inbound() {
    if (!this.pc) return [];
    const out = [];
    (await this.pc.getStats()).forEach(r => {
      if (r.type === 'inbound-rtp') out.push({ track: trackKey(r.trackIdentifier)?.key || r.trackIdentifier, kind: r.kind, bytes: r.bytesReceived || 0, packets: r.packetsReceived || 0, frames: r.framesDecoded || 0, lost: r.packetsLost || 0, width: r.frameWidth || 0, height: r.frameHeight || 0 });
    });
    return out;
  }
}
