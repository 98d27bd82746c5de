// The check before entering a lesson: pick a camera and a microphone, see
// yourself, watch a microphone level meter, then join. It owns its own
// preview stream and stops it before the lesson starts; the lesson's
// media (lesson-media.js) is handed only the chosen device ids. Nothing is
// sent anywhere from here.

import { el } from './common.js';

export class DeviceCheck {
  // `root`: where to render. Resolves `choose()` with {camera, microphone}
  // device ids ('' for the browser's default) when the person presses Join.
  constructor(root, { title, note }) {
    this.root = root;
    this.title = title;
    this.note = note;
    this.stream = null;
    this.audio = null;
    this.frame = 0;
  }

  async choose() {
    const preview = el('video', { id: 'prejoin-preview', autoplay: true, playsinline: true, muted: true, 'aria-label': 'Your camera preview' });
    preview.muted = true;
    this.camera = el('select', { id: 'camera-select', name: 'camera' });
    this.microphone = el('select', { id: 'mic-select', name: 'microphone' });
    this.meter = el('meter', { id: 'mic-level', min: '0', max: '1', low: '0.05', high: '0.8', optimum: '0.3', value: '0', 'aria-label': 'Microphone level' });
    this.status = el('p', { id: 'prejoin-status', class: 'muted' }, 'Asking for your camera and microphone…');
    const join = el('button', { id: 'join', type: 'submit', class: 'big' }, 'Join the lesson');
    const form = el('form', { id: 'prejoin', class: 'prejoin', 'aria-labelledby': 'prejoin-title' },
      el('div', { class: 'prejoin-preview' }, preview),
      el('div', { class: 'prejoin-side' },
        el('h1', { id: 'prejoin-title' }, this.title),
        this.note ? el('p', {}, this.note) : null,
        el('label', { for: 'camera-select' }, 'Camera'), this.camera,
        el('label', { for: 'mic-select' }, 'Microphone'), this.microphone,
        el('label', { for: 'mic-level' }, 'Microphone level (speak to test it)'), this.meter,
        this.status, join));
    this.root.replaceChildren(form);
    this.preview = preview;
    const restart = () => this.open();
    this.camera.addEventListener('change', restart);
    this.microphone.addEventListener('change', restart);
    // Joining is possible at once, even before the devices have opened.
    const chosen = new Promise(resolve => {
      form.addEventListener('submit', ev => {
        ev.preventDefault();
        this.done = true;
        this.stop();
        resolve({ camera: this.camera.value, microphone: this.microphone.value });
      });
    });
    join.focus();
    await this.open();
    return chosen;
  }

  // Opens the chosen devices (the defaults the first time), fills the
  // lists (device names are only readable once a device is open), and
  // starts the meter.
  async open() {
    this.stopStream();
    if (this.done) return;
    const want = id => (id ? { deviceId: { exact: id } } : true);
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio: want(this.microphone.value), video: want(this.camera.value) });
      this.status.textContent = 'You can see yourself, and the bar moves when you speak.';
    } catch (e) {
      this.stream = null;
      this.status.textContent = `Your camera or microphone could not be used (${e.name || e.message}). You can still join and use the chat.`;
    }
    // Joined while the devices were opening: let them go at once.
    if (this.done) return this.stopStream();
    this.preview.srcObject = this.stream;
    await this.list();
    this.meterFrom(this.stream);
  }

  async list() {
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    const fill = (select, kind, current, noun) => {
      const found = devices.filter(d => d.kind === kind);
      const chosen = select.value || current || '';
      select.replaceChildren(...(found.length ? found : [{ deviceId: '', label: '' }]).map((d, i) =>
        el('option', { value: d.deviceId }, d.label || `${noun} ${i + 1}`)));
      if ([...select.options].some(o => o.value === chosen)) select.value = chosen;
    };
    const track = kind => this.stream?.getTracks().find(t => t.kind === kind)?.getSettings().deviceId;
    fill(this.camera, 'videoinput', track('video'), 'Camera');
    fill(this.microphone, 'audioinput', track('audio'), 'Microphone');
  }

  meterFrom(stream) {
    const track = stream?.getAudioTracks()[0];
    if (!track) return;
    this.audio = new AudioContext();
    const analyser = this.audio.createAnalyser();
    analyser.fftSize = 512;
    this.audio.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const s of samples) peak = Math.max(peak, Math.abs(s));
      this.meter.value = Math.min(1, peak * 2);
      this.frame = requestAnimationFrame(tick);
    };
    tick();
  }

  stopStream() {
    cancelAnimationFrame(this.frame);
    this.audio?.close().catch(() => {});
    this.audio = null;
    this.stream?.getTracks().forEach(t => t.stop());
    this.stream = null;
  }

  stop() { this.stopStream(); }
}
