// The chimed meeting page: the official amazon-chime-sdk-js, unmodified, joined through the
// embedded service's `POST /app/join`. `window.chimedPage` exposes state and actions so that
// browser tests can drive the page and read it without scraping the DOM.
import {
  ConsoleLogger,
  DefaultActiveSpeakerPolicy,
  DefaultDeviceController,
  DefaultMeetingSession,
  LogLevel,
  MeetingSessionConfiguration,
  MeetingSessionStatusCode,
  Versioning,
  VideoCodecCapability,
} from 'amazon-chime-sdk-js';

const TOPIC = 'default';
const MESSAGE_LIFETIME_MS = 300000;
const MAX_MESSAGES = 500;
const MAX_EVENTS = 500;

const params = new URLSearchParams(window.location.search);
const logLevel = LogLevel[(params.get('log') || 'warn').toUpperCase()] ?? LogLevel.WARN;
const logger = new ConsoleLogger('chimed-page', logLevel);
// ?codec=h264|vp8: the camera's send codec first (the other still allowed), so tests cover both.
const SEND_CODECS = {
  h264: () => [VideoCodecCapability.h264ConstrainedBaselineProfile(), VideoCodecCapability.vp8()],
  vp8: () => [VideoCodecCapability.vp8(), VideoCodecCapability.h264ConstrainedBaselineProfile()],
};
const sendCodecs = SEND_CODECS[(params.get('codec') || '').toLowerCase()];

function statusName(code) {
  return MeetingSessionStatusCode[code] ?? String(code);
}

function decode(message) {
  const text = message.text();
  try {
    return { text, json: JSON.parse(text) };
  } catch {
    return { text, json: null };
  }
}

class ChimedPage extends EventTarget {
  constructor() {
    super();
    this.sdkVersion = Versioning.sdkVersion;
    this.session = null;
    this._reset();
  }

  _reset() {
    this.status = 'idle'; // idle, joining, connecting, started, stopped, failed
    this.error = null;
    this.stopStatus = null;
    this.meeting = null; // {meetingId, name}
    this.self = null; // {attendeeId, name}
    this._roster = new Map(); // attendeeId -> entry, present attendees only
    this._volumes = new Map(); // attendeeId -> 0..1
    this.messages = [];
    this.events = []; // presence changes and session milestones, in order
    this.activeSpeakers = [];
    this._tiles = new Map(); // tileId -> tile summary
    this.localMuted = false;
    this.cameraOn = false;
    this.sharing = false;
  }

  // --- state for tests (plain JSON-friendly copies) ------------------------------------------
  get roster() {
    return [...this._roster.values()].map((a) => ({ ...a }));
  }

  get volumes() {
    return Object.fromEntries(this._volumes);
  }

  get tiles() {
    return [...this._tiles.values()].map((t) => ({ ...t }));
  }

  /** Each tile's video element as the browser plays it: attendee, content flag, size, playing. */
  get videos() {
    return [...document.querySelectorAll('#tiles video.tile-video')].map((v) => ({
      tileId: Number(v.dataset.tileId),
      attendeeId: v.dataset.attendeeId,
      content: v.dataset.content === 'true',
      local: v.dataset.local === 'true',
      width: v.videoWidth,
      height: v.videoHeight,
      playing: !v.paused && v.readyState >= 2 && v.currentTime > 0,
    }));
  }

  get state() {
    return {
      status: this.status,
      error: this.error,
      stopStatus: this.stopStatus,
      meeting: this.meeting,
      self: this.self,
      roster: this.roster,
      volumes: this.volumes,
      messages: this.messages.slice(),
      events: this.events.slice(),
      activeSpeakers: this.activeSpeakers.slice(),
      tiles: this.tiles,
      localMuted: this.localMuted,
      cameraOn: this.cameraOn,
      sdkVersion: this.sdkVersion,
    };
  }

  _changed(what) {
    this.dispatchEvent(new CustomEvent('change', { detail: what }));
  }

  _event(type, detail = {}) {
    this.events.push({ type, at: Date.now(), ...detail });
    if (this.events.length > MAX_EVENTS) this.events.shift();
    this._changed(type);
  }

  _setStatus(status, detail = {}) {
    this.status = status;
    this._event(status, detail);
  }

  /** Resolves with the state once `predicate(state)` holds (checked on every change). */
  waitFor(predicate, timeoutMs = 10000) {
    const test = typeof predicate === 'string' ? (s) => s.status === predicate : predicate;
    return new Promise((resolve, reject) => {
      const check = () => {
        let ok;
        try {
          ok = test(this.state);
        } catch (err) {
          finish();
          reject(err);
          return;
        }
        if (ok) {
          finish();
          resolve(this.state);
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`waitFor timed out after ${timeoutMs} ms (status ${this.status})`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.removeEventListener('change', check);
      };
      this.addEventListener('change', check);
      check();
    });
  }

  // --- actions -------------------------------------------------------------------------------
  /**
   * Creates (or finds) the meeting named `meeting`, adds `name` as an attendee and starts the
   * SDK session. Options: `audio` ('device': the first microphone, silence when there is none;
   * 'silence'), `video` (start the camera too), `wait` (resolve only once the session started;
   * default true).
   */
  async join(meeting, name, options = {}) {
    const { audio = 'device', video = false, wait = true, timeoutMs = 20000 } = options;
    if (this.session) throw new Error('already in a meeting: leave first');
    this._reset();
    this._setStatus('joining');
    let info;
    try {
      const response = await fetch('/app/join', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ meeting, name }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.message || `join failed: HTTP ${response.status}`);
      info = body;
    } catch (err) {
      this.error = String(err.message || err);
      this._setStatus('failed', { error: this.error });
      throw err;
    }

    const configuration = new MeetingSessionConfiguration(info.Meeting, info.Attendee);
    const deviceController = new DefaultDeviceController(logger);
    const session = new DefaultMeetingSession(configuration, logger, deviceController);
    this.session = session;
    this.meeting = { meetingId: info.Meeting.MeetingId, name: meeting };
    this.self = { attendeeId: info.Attendee.AttendeeId, name: info.Attendee.ExternalUserId };
    this._observe(session.audioVideo);
    if (sendCodecs) session.audioVideo.setVideoCodecSendPreferences(sendCodecs());

    await this._startAudioInput(audio);
    await session.audioVideo.bindAudioElement(document.getElementById('meeting-audio'));
    this._setStatus('connecting');
    const started = this.waitFor((s) => ['started', 'stopped', 'failed'].includes(s.status), timeoutMs);
    session.audioVideo.start();
    if (video) await this.startCamera();
    const ids = { meetingId: this.meeting.meetingId, attendeeId: this.self.attendeeId };
    if (!wait) {
      started.catch(() => {});
      return ids;
    }
    const state = await started;
    if (state.status !== 'started') throw new Error(`session ${state.status}: ${state.error}`);
    return ids;
  }

  async _startAudioInput(mode) {
    const av = this.session.audioVideo;
    if (mode === 'device') {
      const devices = await av.listAudioInputDevices().catch(() => []);
      if (devices.length > 0) {
        await av.startAudioInput(devices[0].deviceId);
        return;
      }
    }
    // No microphone: send silence, since an attendee that sends no audio is not present.
    await av.startAudioInput(DefaultDeviceController.createEmptyAudioDevice());
  }

  _observe(av) {
    av.addObserver({
      audioVideoDidStart: () => this._setStatus('started'),
      audioVideoDidStop: (status) => {
        const code = status.statusCode();
        this.stopStatus = { code, name: statusName(code), failure: status.isFailure() };
        if (status.isFailure()) this.error = `stopped: ${statusName(code)}`;
        this._setStatus(status.isFailure() ? 'failed' : 'stopped', { stopStatus: this.stopStatus });
        this._teardown();
      },
      audioVideoDidStartConnecting: (reconnecting) => {
        if (reconnecting) this._event('reconnecting');
      },
      connectionDidBecomePoor: () => this._event('connectionPoor'),
      videoTileDidUpdate: (tile) => this._tileUpdated(tile),
      videoTileWasRemoved: (tileId) => {
        this._tiles.delete(tileId);
        document.getElementById(`tile-${tileId}`)?.remove();
        this._changed('tiles');
      },
    });
    av.realtimeSubscribeToAttendeeIdPresence((attendeeId, present, externalUserId, dropped) =>
      this._presence(attendeeId, present, externalUserId, dropped),
    );
    av.realtimeSubscribeToMuteAndUnmuteLocalAudio((muted) => {
      this.localMuted = muted;
      this._changed('localMuted');
    });
    av.realtimeSubscribeToReceiveDataMessage(TOPIC, (message) => {
      this._addMessage({
        topic: message.topic,
        senderAttendeeId: message.senderAttendeeId,
        senderName: message.senderExternalUserId,
        timestampMs: message.timestampMs,
        throttled: message.throttled,
        local: false,
        ...decode(message),
      });
    });
    av.subscribeToActiveSpeakerDetector(new DefaultActiveSpeakerPolicy(), (ids) => {
      this.activeSpeakers = ids;
      this._changed('activeSpeakers');
    });
  }

  _presence(attendeeId, present, externalUserId, dropped) {
    const av = this.session?.audioVideo;
    if (!av) return;
    if (!present) {
      const entry = this._roster.get(attendeeId);
      this._roster.delete(attendeeId);
      this._volumes.delete(attendeeId);
      av.realtimeUnsubscribeFromVolumeIndicator(attendeeId);
      this._event(dropped ? 'dropped' : 'left', { attendeeId, name: entry?.name ?? externalUserId });
      return;
    }
    if (this._roster.has(attendeeId)) return;
    this._roster.set(attendeeId, {
      attendeeId,
      name: externalUserId ?? '',
      self: attendeeId === this.self?.attendeeId,
      muted: false,
      volume: 0,
      signalStrength: null,
    });
    av.realtimeSubscribeToVolumeIndicator(attendeeId, (id, volume, muted, signalStrength) => {
      const entry = this._roster.get(id);
      if (!entry) return;
      // null means "unchanged" in the SDK's volume indicator callbacks
      if (volume !== null) {
        entry.volume = volume;
        this._volumes.set(id, volume);
      }
      if (muted !== null) entry.muted = muted;
      if (signalStrength !== null) entry.signalStrength = signalStrength;
      this._changed('volume');
    });
    this._volumes.set(attendeeId, 0);
    this._event('joined', { attendeeId, name: externalUserId ?? '' });
  }

  _tileUpdated(tile) {
    if (!tile.boundAttendeeId || tile.tileId === null) return;
    this._tiles.set(tile.tileId, {
      tileId: tile.tileId,
      attendeeId: tile.boundAttendeeId,
      name: tile.boundExternalUserId,
      local: tile.localTile,
      content: tile.isContent,
      active: tile.active,
      paused: tile.paused,
      width: tile.videoStreamContentWidth,
      height: tile.videoStreamContentHeight,
    });
    let box = document.getElementById(`tile-${tile.tileId}`);
    if (!box) {
      box = document.createElement('figure');
      box.id = `tile-${tile.tileId}`;
      box.className = 'tile';
      const video = document.createElement('video');
      video.className = 'tile-video';
      video.autoplay = true;
      video.muted = true;
      video.playsInline = true;
      box.append(video, document.createElement('figcaption'));
      document.getElementById('tiles').append(box);
      this.session.audioVideo.bindVideoElement(tile.tileId, video);
    }
    // For tests: which attendee's picture this element shows (query videoWidth, playing...).
    const video = box.querySelector('video');
    video.dataset.tileId = String(tile.tileId);
    video.dataset.attendeeId = tile.boundAttendeeId;
    video.dataset.content = String(Boolean(tile.isContent));
    video.dataset.local = String(Boolean(tile.localTile));
    box.querySelector('figcaption').textContent =
      (tile.boundExternalUserId ?? '') +
      (tile.localTile ? ' (you)' : '') +
      (tile.isContent ? ' (content)' : '');
    this._changed('tiles');
  }

  _addMessage(entry) {
    this.messages.push(entry);
    if (this.messages.length > MAX_MESSAGES) this.messages.shift();
    this._changed('messages');
  }

  /** Sends `data` (an object is sent as JSON, a string as text) on topic `default`. */
  send(data, lifetimeMs = MESSAGE_LIFETIME_MS) {
    if (!this.session) throw new Error('not in a meeting');
    this.session.audioVideo.realtimeSendDataMessage(TOPIC, data, lifetimeMs);
    const text = typeof data === 'string' ? data : JSON.stringify(data);
    // The SDK does not echo our own messages back, so record them here.
    this._addMessage({
      topic: TOPIC,
      senderAttendeeId: this.self.attendeeId,
      senderName: this.self.name,
      timestampMs: Date.now(),
      throttled: false,
      local: true,
      text,
      json: typeof data === 'string' ? null : data,
    });
  }

  mute() {
    if (!this.session) throw new Error('not in a meeting');
    this.session.audioVideo.realtimeMuteLocalAudio();
    return this.session.audioVideo.realtimeIsLocalAudioMuted();
  }

  unmute() {
    if (!this.session) throw new Error('not in a meeting');
    return this.session.audioVideo.realtimeUnmuteLocalAudio();
  }

  async startCamera() {
    if (!this.session) throw new Error('not in a meeting');
    const av = this.session.audioVideo;
    const cameras = await av.listVideoInputDevices();
    if (cameras.length === 0) throw new Error('no camera');
    await av.startVideoInput(cameras[0].deviceId);
    av.startLocalVideoTile();
    this.cameraOn = true;
    this._changed('camera');
  }

  async stopCamera() {
    if (!this.session) return;
    const av = this.session.audioVideo;
    av.stopLocalVideoTile();
    await av.stopVideoInput();
    this.cameraOn = false;
    this._changed('camera');
  }

  /**
   * Shares a drawn picture (`width` x `height`, a moving bar on a canvas) as content: the SDK's
   * second session, attendee `<self>#content`, which the others see as a content tile.
   */
  async shareContent(width = 640, height = 360) {
    if (!this.session) throw new Error('not in a meeting');
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d');
    let x = 0;
    this._contentTimer = setInterval(() => {
      ctx.fillStyle = '#234';
      ctx.fillRect(0, 0, width, height);
      ctx.fillStyle = '#fc3';
      ctx.fillRect((x += 8) % width, 0, 40, height);
    }, 66);
    await this.session.audioVideo.startContentShare(canvas.captureStream(15));
    this.sharing = true;
    this._changed('content');
  }

  stopContent() {
    if (!this.session) return;
    this.session.audioVideo.stopContentShare();
    clearInterval(this._contentTimer);
    this.sharing = false;
    this._changed('content');
  }

  /** Leaves the meeting; resolves once the SDK reports the session stopped. */
  async leave(timeoutMs = 10000) {
    if (!this.session) return this.state;
    const stopped = this.waitFor((s) => s.status === 'stopped' || s.status === 'failed', timeoutMs);
    this.session.audioVideo.stop();
    return stopped;
  }

  _teardown() {
    const session = this.session;
    if (!session) return;
    this.session = null;
    this.cameraOn = false;
    if (this.sharing) session.audioVideo.stopContentShare();
    clearInterval(this._contentTimer);
    this.sharing = false;
    session.audioVideo.unbindAudioElement();
    session.audioVideo.stopVideoInput().catch(() => {});
    session.audioVideo.stopAudioInput().catch(() => {});
    this._roster.clear();
    this._volumes.clear();
    this._tiles.clear();
    document.getElementById('tiles').replaceChildren();
    this._changed('teardown');
  }
}

// --- the DOM view ------------------------------------------------------------------------------
const page = new ChimedPage();
window.chimedPage = page;

const $ = (id) => document.getElementById(id);

function render() {
  const joined = page.session !== null;
  $('join-form').hidden = joined;
  $('meeting').hidden = !joined;
  $('status').textContent = page.error ? `${page.status}: ${page.error}` : page.status;
  $('version').textContent = `amazon-chime-sdk-js ${page.sdkVersion}`;
  if (page.meeting) $('meeting-name').textContent = page.meeting.name;
  $('mute').textContent = page.localMuted ? 'Unmute' : 'Mute';
  $('camera').textContent = page.cameraOn ? 'Stop camera' : 'Start camera';

  const speaking = new Set(page.activeSpeakers);
  $('roster').replaceChildren(
    ...page.roster.map((a) => {
      const li = document.createElement('li');
      li.dataset.attendeeId = a.attendeeId;
      li.className = speaking.has(a.attendeeId) ? 'speaking' : '';
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = a.name + (a.self ? ' (you)' : '');
      const mic = document.createElement('span');
      mic.className = 'mic';
      mic.textContent = a.muted ? 'muted' : '';
      const meter = document.createElement('meter');
      meter.min = 0;
      meter.max = 1;
      meter.value = a.volume;
      li.append(name, meter, mic);
      return li;
    }),
  );

  const list = $('messages');
  if (list.childElementCount !== page.messages.length) {
    list.replaceChildren(
      ...page.messages.map((m) => {
        const li = document.createElement('li');
        li.className = m.throttled ? 'throttled' : '';
        const who = document.createElement('b');
        who.textContent = `${m.senderName}: `;
        li.append(who, document.createTextNode(m.text));
        return li;
      }),
    );
    list.scrollTop = list.scrollHeight;
  }
}

let renderPending = false;
page.addEventListener('change', () => {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    render();
  });
});

function reportError(err) {
  logger.error(String(err?.message || err));
  page.error = String(err?.message || err);
  render();
}

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  page.join($('join-meeting').value.trim(), $('join-name').value.trim()).catch(reportError);
});
$('mute').addEventListener('click', () => (page.localMuted ? page.unmute() : page.mute()));
$('camera').addEventListener('click', () =>
  (page.cameraOn ? page.stopCamera() : page.startCamera()).catch(reportError),
);
$('leave').addEventListener('click', () => page.leave().catch(reportError));
$('message-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('message-text').value;
  if (!text) return;
  try {
    page.send(text);
    $('message-text').value = '';
  } catch (err) {
    reportError(err);
  }
});
window.addEventListener('beforeunload', () => page.session?.audioVideo.stop());

// ?meeting=...&name=... fill the form; with &autojoin=1 the page joins at once.
$('join-meeting').value = params.get('meeting') ?? '';
$('join-name').value = params.get('name') ?? '';
render();
if (params.get('autojoin') === '1' && params.get('meeting') && params.get('name')) {
  page.join(params.get('meeting'), params.get('name')).catch(reportError);
}
