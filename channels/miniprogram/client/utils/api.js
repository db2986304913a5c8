// Gateway client: wx.login session, bearer-authenticated JSON calls with one re-login on 401,
// and the streaming voice socket URL.
const config = require('./config');

const SESSION_KEY = 'bankbot.miniprogram.session';
const EXPIRY_MARGIN_MS = 60 * 1000;
const TEXT = {
  network: '网络连接异常，请检查网络后重试。',
  busy: '操作过于频繁，请稍后再试。',
  server: '服务暂时不可用，请稍后再试。',
  login: '登录失败，请稍后重试。',
};

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.name = 'ApiError';
    this.status = status || 0;
    this.code = code || '';
  }
}

// The gateway's own message is shown as is; status-based wording only when it sent none.
function toError(status, body) {
  const error = body && body.error;
  if (error && error.message) return new ApiError(error.message, status, error.code);
  if (status === 429) return new ApiError(TEXT.busy, status);
  if (status >= 500) return new ApiError(TEXT.server, status);
  return new ApiError(TEXT.network, status);
}

function post(path, data, token) {
  return new Promise((resolve, reject) => {
    const header = { 'Content-Type': 'application/json' };
    if (token) header.Authorization = `Bearer ${token}`;
    wx.request({
      url: config.baseUrl + path,
      method: 'POST',
      data,
      header,
      dataType: 'json',
      timeout: config.requestTimeoutMs,
      success: (res) => {
        const body = res.data && typeof res.data === 'object' ? res.data : {};
        resolve({ status: res.statusCode, body });
      },
      fail: () => reject(new ApiError(TEXT.network)),
    });
  });
}

function wxLogin() {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => (res.code ? resolve(res.code) : reject(new ApiError(TEXT.login))),
      fail: () => reject(new ApiError(TEXT.login)),
    });
  });
}

function readSession() {
  try {
    const session = wx.getStorageSync(SESSION_KEY);
    if (session && session.token && session.expiresAt - EXPIRY_MARGIN_MS > Date.now()) return session;
  } catch (error) {
    // Unreadable storage just means logging in again.
  }
  return null;
}

function clearSession() {
  try {
    wx.removeStorageSync(SESSION_KEY);
  } catch (error) {
    // Nothing stored is as good as nothing valid.
  }
}

// Concurrent callers (app launch, the page, a 401 retry) share one wx.login round trip.
let pendingLogin = null;

function login() {
  if (pendingLogin) return pendingLogin;
  pendingLogin = wxLogin()
    .then((code) => post('/miniprogram/login', { code }))
    .then(({ status, body }) => {
      if (status !== 200 || !body.token) throw toError(status, body);
      const session = {
        token: body.token,
        bound: body.bound === true,
        expiresAt: Date.now() + (Number(body.expires_in) || 7200) * 1000,
      };
      try {
        wx.setStorageSync(SESSION_KEY, session);
      } catch (error) {
        // Full storage: this session still works, the next call just logs in again.
      }
      return session;
    })
    .then(
      (session) => {
        pendingLogin = null;
        return session;
      },
      (error) => {
        pendingLogin = null;
        throw error;
      },
    );
  return pendingLogin;
}

function ensureSession() {
  const session = readSession();
  return session ? Promise.resolve(session) : login();
}

// A 401 means the gateway refused the token before acting on the request, so one retry is safe.
async function authedPost(path, data) {
  let session = await ensureSession();
  let res = await post(path, data, session.token);
  if (res.status === 401) {
    clearSession();
    session = await login();
    res = await post(path, data, session.token);
  }
  if (res.status !== 200) throw toError(res.status, res.body);
  return res.body;
}

const RETRY_DELAYS_MS = [1000, 3000];

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// One id per message, sent again with every retry of it: the gateway answers a retry with the first
// request's reply, so a message lost on the way back is never a second turn (or a second transfer).
function newMessageId() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

// Messages are retried when the network failed or the gateway says the first try is still running (409).
async function postMessage(body) {
  const data = { ...body, msg_id: newMessageId() };
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await authedPost('/miniprogram/messages', data);
    } catch (error) {
      const retryable = error instanceof ApiError && (error.status === 0 || error.status === 409);
      if (!retryable || attempt >= RETRY_DELAYS_MS.length) throw error;
      await sleep(RETRY_DELAYS_MS[attempt]);
    }
  }
}

function sendText(text, speech) {
  const body = { type: 'text', text };
  if (speech) body.speech = true;
  return postMessage(body);
}

// voice: {format: 'pcm'|'mp3', sampleRate, audio: base64}
function sendVoice(voice, speech) {
  const body = { type: 'voice', format: voice.format, sample_rate: voice.sampleRate, audio: voice.audio };
  if (speech) body.speech = true;
  return postMessage(body);
}

function reportSubscription(templateId, result) {
  return authedPost('/miniprogram/subscriptions', { template_id: templateId, result });
}

// https -> wss, http -> ws (local development only).
function voiceSocketUrl(token) {
  return `${config.baseUrl.replace(/^http/, 'ws')}/miniprogram/voice?token=${encodeURIComponent(token)}`;
}

module.exports = {
  ApiError,
  ensureSession,
  login,
  sendText,
  sendVoice,
  reportSubscription,
  voiceSocketUrl,
};
