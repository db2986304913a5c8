// App entry: logs in early and applies mini-program updates as soon as they are downloaded.
const api = require('./utils/api');

App({
  onLaunch() {
    // Warm the session so the first message does not wait for wx.login; the chat page reports failures.
    api.ensureSession().catch(() => {});
    this.watchForUpdates();
  },

  watchForUpdates() {
    if (!wx.canIUse('getUpdateManager')) return;
    const updateManager = wx.getUpdateManager();
    updateManager.onUpdateReady(() => {
      wx.showModal({
        title: '更新提示',
        content: '新版本已经准备好，是否重启应用？',
        success: (res) => {
          if (res.confirm) updateManager.applyUpdate();
        },
      });
    });
  },
});
