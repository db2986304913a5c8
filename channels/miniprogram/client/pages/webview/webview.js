// Alternative entry: hosts the gateway's H5 web chat (/webchat/) in a web-view.
const config = require('../../utils/config');

Page({
  data: {
    url: `${config.baseUrl}/webchat/`,
  },

  onError() {
    wx.showModal({
      title: '页面加载失败',
      content: '网页版客服暂时无法打开，请返回使用小程序内的智能客服。',
      showCancel: false,
      success: () => wx.navigateBack(),
    });
  },
});
