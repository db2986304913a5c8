// Chat page: text turns with quick replies, masked code entry, hold-to-talk voice streamed over a
// WebSocket (whole-utterance upload when the socket fails), spoken replies and reminder subscription.
const api = require('../../utils/api');
const config = require('../../utils/config');

const MASK = '******';
const CANCEL_DISTANCE_PX = 50;
const REPLY_FILE_PREFIX = 'reply-';
const TEXT = {
  welcome: '您好，我是手机银行智能客服，可以帮您查询余额、转账、还信用卡、挂失银行卡等。您可以直接输入问题，也可以按住说话。',
  recording: '正在录音，松开发送，上滑取消',
  releaseToCancel: '松开手指，取消发送',
  recognising: '正在识别…',
  heard: (text) => `正在识别：${text}`,
  tooShort: '说话时间太短',
  voiceInterrupted: '语音连接中断，请重新发送。',
  voiceTimeout: '语音识别超时，请重新发送。',
  voiceFailed: '语音识别失败，请重试或改用文字输入。',
  recordFailed: '录音失败，请重试',
  micDenied: '请在设置中允许使用麦克风后重试。',
  noTemplates: '暂未开放还款提醒',
  subscribed: '已开启还款提醒',
  notSubscribed: '未开启还款提醒',
  subscribeBlocked: '请点击右上角「···」→「设置」，打开“订阅消息”后重试。',
};
const PLACEHOLDER = {
  text: '请输入您的问题',
  otp: '请输入短信验证码',
  pin: '请输入6位交易密码',
};

// The recorder is global to the mini-program: its listeners are bound once and forwarded to the page.
const recorder = wx.getRecorderManager();
let activePage = null;
recorder.onStart(() => activePage && activePage.onRecorderStart());
recorder.onFrameRecorded((res) => activePage && activePage.onRecorderFrame(res));
recorder.onStop((res) => activePage && activePage.onRecorderStop(res));
recorder.onError((res) => activePage && activePage.onRecorderError(res));
recorder.onInterruptionBegin(() => activePage && activePage.releaseTalk(true));

function modeFields(mode) {
  const secret = mode === 'otp' || mode === 'pin';
  return { inputMode: secret ? mode : 'text', secret, placeholder: PLACEHOLDER[secret ? mode : 'text'] };
}

Page({
  data: Object.assign(
    {
      messages: [],
      quickReplies: [],
      quickId: '',
      scrollTo: '',
      draft: '',
      voiceMode: false,
      recording: false,
      cancelling: false,
      status: '',
      busy: false,
      showBindHint: false,
    },
    modeFields('text'),
  ),

  onLoad() {
    activePage = this;
    this.seq = 0;
    this.turn = null;
    this.fs = wx.getFileSystemManager();
    this.audio = wx.createInnerAudioContext();
    this.audio.onEnded(() => this.removeAudioFile());
    this.audio.onError(() => this.removeAudioFile());
    this.audioFile = '';
    this.removeStaleReplies();
    this.append([['bot', TEXT.welcome]]);
    api.ensureSession().then(
      (session) => this.setData({ showBindHint: !session.bound }),
      (error) => this.append([['system', error.message]]),
    );
  },

  onHide() {
    this.releaseTalk(true);
    this.stopSpeech();
  },

  onUnload() {
    if (this.turn) this.finishTurn(this.turn);
    if (activePage === this) activePage = null;
    this.audio.destroy();
    this.removeAudioFile();
  },

  // entries: [[role, text], ...] with role 'user' | 'bot' | 'system'; one setData per batch.
  append(entries, extra) {
    const update = {};
    let index = this.data.messages.length;
    entries.forEach(([role, text]) => {
      const id = `m${++this.seq}`;
      update[`messages[${index++}]`] = { id, role, text };
      update.scrollTo = id;
    });
    this.setData(Object.assign(update, extra));
  },

  // Shows a gateway reply: bubbles, the batch's quick replies under its last message, the input mode
  // asked for by the last message, and the spoken reply if one came back.
  renderReply(body) {
    const messages = Array.isArray(body.messages) ? body.messages : [];
    const entries = [];
    let buttons = [];
    messages.forEach((message) => {
      if (message.text) entries.push(['bot', message.text]);
      if (Array.isArray(message.buttons)) buttons = buttons.concat(message.buttons.filter((b) => b && b.title));
    });
    const last = messages[messages.length - 1] || {};
    const extra = Object.assign({ quickReplies: buttons }, modeFields(last.input));
    if (last.input === 'otp' || last.input === 'pin') extra.voiceMode = false;
    if (buttons.length) {
      extra.quickId = `q${++this.seq}`;
      extra.scrollTo = extra.quickId;
    }
    this.append(entries, extra);
    this.playSpeech(body.speech);
  },

  onInput(e) {
    this.setData({ draft: e.detail.value });
  },

  // From the send button or the keyboard's send key (whose event carries the value).
  onSend(e) {
    const value = e && e.detail && typeof e.detail.value === 'string' ? e.detail.value : this.data.draft;
    const text = value.trim();
    if (text) this.sendText(text, { typed: true });
  },

  onQuickReply(e) {
    const button = this.data.quickReplies[e.currentTarget.dataset.index];
    if (button) this.sendText(button.payload, { shownAs: button.title });
  },

  // A typed one-time code or PIN is shown as ****** and never kept in the chat history.
  async sendText(text, options) {
    if (this.data.busy || this.turn || !text) return;
    const opts = options || {};
    const previous = { mode: this.data.inputMode, quickReplies: this.data.quickReplies };
    const shown = opts.typed && this.data.secret ? MASK : opts.shownAs || text;
    this.stopSpeech();
    this.append([['user', shown]], Object.assign({ quickReplies: [], draft: '', busy: true }, modeFields('text')));
    try {
      this.renderReply(await api.sendText(text, config.speakReplies.text));
    } catch (error) {
      // The assistant is still waiting for the same answer: restore what the customer could reply with.
      this.append([['system', error.message]], Object.assign({ quickReplies: previous.quickReplies }, modeFields(previous.mode)));
    } finally {
      this.setData({ busy: false });
    }
  },

  onToggleVoice() {
    if (!this.data.secret && !this.turn) this.setData({ voiceMode: !this.data.voiceMode });
  },

  onCloseHint() {
    this.setData({ showBindHint: false });
  },

  onOpenWeb() {
    wx.navigateTo({ url: '/pages/webview/webview' });
  },

  // ---- Repayment reminders ----

  onSubscribe() {
    const tmplIds = config.reminderTemplateIds.filter((id) => id && !id.startsWith('REPLACE_'));
    if (!tmplIds.length) {
      wx.showToast({ title: TEXT.noTemplates, icon: 'none' });
      return;
    }
    // Called straight from the tap: WeChat only shows the subscribe dialog in response to one.
    wx.requestSubscribeMessage({
      tmplIds,
      success: (res) => this.reportSubscriptions(tmplIds, res),
      fail: () => wx.showModal({ title: '无法开启提醒', content: TEXT.subscribeBlocked, showCancel: false }),
    });
  },

  async reportSubscriptions(tmplIds, res) {
    // 'ban' and 'filter' are WeChat's own verdicts, not the customer's: only accept/reject are reported.
    const answered = tmplIds.filter((id) => res[id] === 'accept' || res[id] === 'reject');
    try {
      await Promise.all(answered.map((id) => api.reportSubscription(id, res[id])));
      const accepted = answered.some((id) => res[id] === 'accept');
      wx.showToast({ title: accepted ? TEXT.subscribed : TEXT.notSubscribed, icon: accepted ? 'success' : 'none' });
    } catch (error) {
      wx.showToast({ title: error.message, icon: 'none' });
    }
  },

  // ---- Hold-to-talk ----

  onTalkStart(e) {
    if (this.data.busy || this.data.secret || this.turn) return;
    this.stopSpeech();
    const turn = {
      startY: e.touches[0].clientY,
      socket: null,
      queue: [],
      frames: 0,
      file: '',
      timer: null,
      started: false, // recorder running
      released: false, // finger up, or the duration limit hit
      cancelled: false,
      open: false, // socket open and "start" sent
      ended: false, // "end" queued
      endSent: false, // "end" handed to the open socket: the server may act on it from here on
      failed: false,
      closed: false,
      done: false,
    };
    this.turn = turn;
    this.setData({ recording: true, cancelling: false, status: TEXT.recording });
    recorder.start({
      duration: config.voice.maxDurationMs,
      sampleRate: config.voice.sampleRate,
      numberOfChannels: 1,
      format: 'PCM',
      frameSize: config.voice.frameSizeKb,
    });
    this.connectVoice(turn);
  },

  onTalkMove(e) {
    const turn = this.turn;
    if (!turn || turn.released) return;
    const cancelling = turn.startY - e.touches[0].clientY > CANCEL_DISTANCE_PX;
    if (cancelling !== this.data.cancelling) {
      this.setData({ cancelling, status: cancelling ? TEXT.releaseToCancel : TEXT.recording });
    }
  },

  onTalkEnd() {
    this.releaseTalk(this.data.cancelling);
  },

  onTalkCancel() {
    this.releaseTalk(true);
  },

  releaseTalk(cancel) {
    const turn = this.turn;
    if (!turn || turn.released) return;
    turn.released = true;
    turn.cancelled = cancel;
    this.setData({ recording: false, cancelling: false, status: cancel ? '' : TEXT.recognising });
    if (cancel) this.closeSocket(turn);
    // Released before the recorder started: onRecorderStart stops it.
    if (turn.started) recorder.stop();
  },

  onRecorderStart() {
    const turn = this.turn;
    if (!turn) return;
    turn.started = true;
    if (turn.released) recorder.stop();
  },

  onRecorderFrame(res) {
    const turn = this.turn;
    if (!turn || turn.cancelled || turn.failed || !res.frameBuffer) return;
    turn.frames += 1;
    this.sendFrame(turn, res.frameBuffer, false);
  },

  onRecorderStop(res) {
    const turn = this.turn;
    if (!turn || turn.file) return;
    turn.file = res.tempFilePath;
    if (!turn.released) {
      turn.released = true; // the duration limit ended it while the finger was still down
      this.setData({ recording: false, cancelling: false });
    }
    if (turn.cancelled) {
      this.finishTurn(turn);
      return;
    }
    if (res.duration < config.voice.minDurationMs) {
      wx.showToast({ title: TEXT.tooShort, icon: 'none' });
      this.finishTurn(turn);
      return;
    }
    this.setData({ busy: true, status: TEXT.recognising });
    turn.timer = setTimeout(() => this.finishTurn(turn, TEXT.voiceTimeout), config.voice.replyTimeoutMs);
    // No frames streamed (e.g. WeChat on PC has no onFrameRecorded) or no socket: upload the file.
    if (turn.failed || turn.frames === 0) {
      this.closeSocket(turn);
      this.uploadRecording(turn);
      return;
    }
    turn.ended = true;
    this.sendFrame(turn, JSON.stringify({ type: 'end' }), true);
  },

  onRecorderError(res) {
    if (this.turn) this.finishTurn(this.turn);
    if (/auth|permission/i.test((res && res.errMsg) || '')) {
      wx.showModal({
        title: '无法使用麦克风',
        content: TEXT.micDenied,
        confirmText: '去设置',
        success: (choice) => {
          if (choice.confirm) wx.openSetting();
        },
      });
    } else {
      wx.showToast({ title: TEXT.recordFailed, icon: 'none' });
    }
  },

  connectVoice(turn) {
    api.ensureSession().then(
      (session) => {
        if (turn.closed || turn.failed) return;
        const socket = wx.connectSocket({
          url: api.voiceSocketUrl(session.token),
          timeout: config.voice.connectTimeoutMs,
          fail: () => this.onSocketFailed(turn),
        });
        turn.socket = socket;
        socket.onOpen(() => {
          if (turn.closed) return;
          turn.open = true;
          const start = { type: 'start', sample_rate: config.voice.sampleRate, format: 'pcm' };
          socket.send({ data: JSON.stringify(start), fail: () => this.onSocketFailed(turn) });
          const queued = turn.queue;
          turn.queue = [];
          queued.forEach((item) => this.sendFrame(turn, item.data, item.isEnd));
        });
        socket.onMessage((res) => this.onVoiceEvent(turn, res.data));
        socket.onError(() => this.onSocketFailed(turn));
        socket.onClose(() => this.onSocketFailed(turn));
      },
      () => this.onSocketFailed(turn),
    );
  },

  // Binary recorder frames and the JSON "end" frame, in order; queued until the socket opens.
  sendFrame(turn, data, isEnd) {
    if (turn.closed) return;
    if (!turn.open) {
      turn.queue.push({ data, isEnd });
      return;
    }
    if (isEnd) turn.endSent = true;
    turn.socket.send({ data, fail: () => this.onSocketFailed(turn) });
  },

  onSocketFailed(turn) {
    if (turn !== this.turn || turn.done || turn.closed || turn.failed || turn.cancelled) return;
    turn.failed = true;
    this.closeSocket(turn);
    // After "end" reached the socket the server may already be acting on the utterance: never send it twice.
    if (turn.endSent) this.finishTurn(turn, TEXT.voiceInterrupted);
    // Recording over but "end" never left: upload the whole file instead. Still recording: onRecorderStop will.
    else if (turn.ended) this.uploadRecording(turn);
  },

  onVoiceEvent(turn, raw) {
    if (turn !== this.turn || turn.closed || typeof raw !== 'string') return;
    let event;
    try {
      event = JSON.parse(raw);
    } catch (error) {
      return;
    }
    if (event.type === 'partial' && event.text) {
      this.setData({ status: TEXT.heard(event.text) });
    } else if (event.type === 'final' && event.text) {
      this.append([['user', event.text]]);
    } else if (event.type === 'reply') {
      this.finishTurn(turn);
      this.renderReply(event);
    } else if (event.type === 'error') {
      this.finishTurn(turn, event.message || TEXT.voiceFailed);
    }
  },

  async uploadRecording(turn) {
    if (turn.uploading) return;
    turn.uploading = true;
    clearTimeout(turn.timer); // the request's own timeout applies from here
    try {
      const audio = await new Promise((resolve, reject) => {
        this.fs.readFile({ filePath: turn.file, encoding: 'base64', success: (res) => resolve(res.data), fail: reject });
      });
      const voice = { format: 'pcm', sampleRate: config.voice.sampleRate, audio };
      const body = await api.sendVoice(voice, config.speakReplies.voice);
      if (turn.done) return; // timed out meanwhile
      this.finishTurn(turn);
      if (body.transcript) this.append([['user', body.transcript]]);
      this.renderReply(body);
    } catch (error) {
      this.finishTurn(turn, error.message || TEXT.voiceFailed);
    }
  },

  closeSocket(turn) {
    if (turn.closed) return;
    turn.closed = true;
    turn.queue = [];
    if (turn.socket) turn.socket.close({ code: 1000 });
  },

  finishTurn(turn, errorMessage) {
    if (turn.done) return;
    turn.done = true;
    clearTimeout(turn.timer);
    this.closeSocket(turn);
    if (turn.started && !turn.file) recorder.stop();
    if (this.turn === turn) this.turn = null;
    const update = { busy: false, status: '', recording: false, cancelling: false };
    if (errorMessage) this.append([['system', errorMessage]], update);
    else this.setData(update);
  },

  // ---- Spoken replies ----

  playSpeech(speech) {
    if (!speech || !speech.audio) return;
    const extension = /^[a-z0-9]{1,5}$/i.test(speech.format || '') ? speech.format : 'wav';
    const filePath = `${wx.env.USER_DATA_PATH}/${REPLY_FILE_PREFIX}${Date.now()}.${extension}`;
    // InnerAudioContext plays files, not data: the base64 WAV goes to a local file first.
    this.fs.writeFile({
      filePath,
      data: speech.audio,
      encoding: 'base64',
      success: () => {
        this.stopSpeech();
        this.removeAudioFile();
        this.audioFile = filePath;
        this.audio.src = filePath;
        this.audio.play();
      },
      fail: () => {}, // the reply is on screen already
    });
  },

  stopSpeech() {
    if (this.audio && this.audioFile) this.audio.stop();
  },

  removeAudioFile() {
    if (!this.audioFile) return;
    this.fs.unlink({ filePath: this.audioFile, fail: () => {} });
    this.audioFile = '';
  },

  // Spoken replies left behind by an earlier run (killed mid-playback) would fill the user directory.
  removeStaleReplies() {
    this.fs.readdir({
      dirPath: wx.env.USER_DATA_PATH,
      success: (res) => {
        res.files
          .filter((name) => name.startsWith(REPLY_FILE_PREFIX) && `${wx.env.USER_DATA_PATH}/${name}` !== this.audioFile)
          .forEach((name) => this.fs.unlink({ filePath: `${wx.env.USER_DATA_PATH}/${name}`, fail: () => {} }));
      },
      fail: () => {},
    });
  },
});
