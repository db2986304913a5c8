// Client settings: which gateway to talk to, the reminder templates and the voice capture parameters.

// One gateway per mini-program build: DevTools/preview builds ("develop") may use a local HTTP gateway
// once "不校验合法域名" is ticked; trial and release builds must use an HTTPS domain configured as a
// request/socket legal domain (and as a business domain for the web-view page) on mp.weixin.qq.com.
const GATEWAYS = {
  develop: 'http://127.0.0.1:8080',
  trial: 'https://bankbot-uat.example-bank.cn',
  release: 'https://bankbot.example-bank.cn',
};

function envVersion() {
  try {
    return wx.getAccountInfoSync().miniProgram.envVersion || 'release';
  } catch (error) {
    return 'release';
  }
}

module.exports = {
  baseUrl: GATEWAYS[envVersion()] || GATEWAYS.release,

  // Repayment reminder subscribe-message templates (the gateway's BANKBOT_MINIPROGRAM_REMINDER_TEMPLATE_ID).
  // One call may ask for at most 3 one-off templates; empty entries are ignored.
  reminderTemplateIds: ['REPLACE_WITH_REMINDER_TEMPLATE_ID'],

  requestTimeoutMs: 15000,

  // Ask the gateway for a spoken reply (WAV) after voice turns; text turns stay silent.
  speakReplies: { text: false, voice: true },

  voice: {
    sampleRate: 16000,
    // 16 kHz, 16-bit mono PCM is 32 KB/s: 4 KB frames stream about 8 times a second.
    frameSizeKb: 4,
    maxDurationMs: 60000,
    minDurationMs: 600,
    connectTimeoutMs: 5000,
    replyTimeoutMs: 20000,
  },
};
