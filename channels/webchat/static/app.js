// Web chat page: demo login, a chat log with quick replies, and a masked input for one-time codes.
"use strict";

(() => {
  const OTP_MASK = "●●●●●●";
  const TOKEN_KEY = "bankbot.webchat.token";
  const CUSTOMER_KEY = "bankbot.webchat.customer";
  const TEXT = {
    welcome: "您好，我是手机银行智能客服。可以帮您查询余额、转账、还信用卡、挂失银行卡等。",
    loginFailed: "登录失败，请检查客户号后重试。",
    network: "网络连接异常，请检查网络后重试。",
    expired: "登录已失效，请重新登录。",
    placeholder: "请输入您的问题",
    otpPlaceholder: "请输入短信验证码",
    pinPlaceholder: "请输入6位交易密码",
    who: (id) => `客户 ${id}`,
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    login: $("login"), loginForm: $("login-form"), customerId: $("customer-id"), loginError: $("login-error"),
    chat: $("chat"), log: $("log"), composer: $("composer"), input: $("message-input"), send: $("send-button"),
    who: $("who"), logout: $("logout-button"),
  };
  const state = { token: null, otp: false, busy: false };

  async function postJson(path, body) {
    const headers = { "Content-Type": "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
    let payload = {};
    try { payload = await response.json(); } catch (_) { /* an empty or non-JSON body: status says enough */ }
    return { status: response.status, body: payload };
  }

  // One id per message, kept across resends: the gateway answers a message once however often it arrives.
  function newMessageId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const RETRY_DELAYS_MS = [1000, 2000, 4000];
  const RETRYABLE = new Set([502, 503, 504]);

  // Sends a message, resending it (same id) when the network or the service failed: at most once answered.
  async function postMessage(text) {
    const body = { text, message_id: newMessageId() };
    for (let attempt = 0; ; attempt += 1) {
      try {
        const result = await postJson("messages", body);
        if (!RETRYABLE.has(result.status) || attempt >= RETRY_DELAYS_MS.length) return result;
      } catch (error) {
        if (attempt >= RETRY_DELAYS_MS.length) throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
    }
  }

  function scrollToEnd() {
    ui.chat.scrollTop = ui.chat.scrollHeight;
  }

  function addBubble(role, text) {
    const item = document.createElement("li");
    item.className = `bubble ${role}`;
    // textContent, never innerHTML: replies and echoes are shown as text, whatever they contain.
    item.textContent = text;
    ui.log.append(item);
    scrollToEnd();
    return item;
  }

  function addQuickReplies(buttons) {
    const group = document.createElement("li");
    group.className = "quick-replies";
    for (const button of buttons) {
      const element = document.createElement("button");
      element.type = "button";
      element.className = "quick-reply";
      element.textContent = button.title;
      element.dataset.payload = button.payload;
      element.addEventListener("click", () => {
        if (state.busy) return;
        // One answer per question: a second tap must not confirm a transfer twice.
        for (const sibling of group.querySelectorAll("button")) sibling.disabled = true;
        element.classList.add("chosen");
        send(button.payload, button.title);
      });
      group.append(element);
    }
    ui.log.append(group);
    scrollToEnd();
  }

  function addImage(url) {
    const item = document.createElement("li");
    item.className = "bubble bot image";
    const image = document.createElement("img");
    image.src = url;
    image.alt = "";
    item.append(image);
    ui.log.append(item);
  }

  // mode: false (text), "otp" (SMS code) or "pin" (transaction PIN); both are typed masked and echoed as dots.
  function setOtpMode(mode) {
    const on = Boolean(mode);
    state.otp = on;
    ui.input.type = on ? "password" : "text";
    ui.input.inputMode = on ? "numeric" : "text";
    ui.input.autocomplete = mode === "otp" ? "one-time-code" : "off";
    ui.input.placeholder = mode === "pin" ? TEXT.pinPlaceholder : on ? TEXT.otpPlaceholder : TEXT.placeholder;
    ui.composer.dataset.mode = on ? mode : "text";
  }

  function render(messages) {
    let asksForCode = false; // false, "otp" or "pin"
    for (const message of messages) {
      if (message.text) addBubble("bot", message.text);
      if (message.image) addImage(message.image);
      if (Array.isArray(message.buttons) && message.buttons.length) addQuickReplies(message.buttons);
      if (message.input === "otp" || message.input === "pin") asksForCode = message.input;
    }
    setOtpMode(asksForCode);
  }

  function setBusy(busy) {
    state.busy = busy;
    ui.send.disabled = busy;
    ui.composer.classList.toggle("busy", busy);
  }

  async function send(text, shownAs) {
    if (state.busy) return;
    // A code is echoed as dots: the page never displays it, even to the customer who typed it.
    addBubble("user", state.otp ? OTP_MASK : (shownAs ?? text));
    setOtpMode(false);
    setBusy(true);
    const typing = addBubble("bot typing", "…");
    try {
      const { status, body } = await postMessage(text);
      typing.remove();
      if (status === 401) {
        addBubble("system", (body.error && body.error.message) || TEXT.expired);
        signOut(false);
        return;
      }
      if (Array.isArray(body.messages)) render(body.messages);
      else if (body.error) addBubble("system", body.error.message);
    } catch (_) {
      typing.remove();
      addBubble("system", TEXT.network);
    } finally {
      setBusy(false);
      ui.input.focus();
    }
  }

  function showChat(customerId) {
    ui.login.hidden = true;
    ui.chat.hidden = false;
    ui.composer.hidden = false;
    ui.who.hidden = false;
    ui.logout.hidden = false;
    ui.who.textContent = TEXT.who(customerId);
    if (!ui.log.childElementCount) openConversation();
    ui.input.focus();
  }

  // The assistant speaks first; it may already guess why the customer is here and offer it as a yes/no.
  async function openConversation() {
    setBusy(true);
    const typing = addBubble("bot typing", "…");
    try {
      const { status, body } = await postJson("open", {});
      typing.remove();
      if (status === 200 && Array.isArray(body.messages) && body.messages.length) {
        render(body.messages);
        return;
      }
    } catch (_) {
      typing.remove();
    } finally {
      setBusy(false);
    }
    addBubble("bot", TEXT.welcome);
  }

  function signOut(clearLog) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(CUSTOMER_KEY);
    setOtpMode(false);
    if (clearLog) ui.log.replaceChildren();
    ui.login.hidden = false;
    ui.chat.hidden = !ui.log.childElementCount;
    ui.composer.hidden = true;
    ui.who.hidden = true;
    ui.logout.hidden = true;
  }

  ui.loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.loginError.hidden = true;
    const customerId = ui.customerId.value.trim().toUpperCase();
    try {
      const { status, body } = await postJson("session", { customer_id: customerId });
      if (status !== 200 || !body.token) {
        ui.loginError.textContent = (body.error && body.error.message) || TEXT.loginFailed;
        ui.loginError.hidden = false;
        return;
      }
      state.token = body.token;
      sessionStorage.setItem(TOKEN_KEY, body.token);
      sessionStorage.setItem(CUSTOMER_KEY, customerId);
      ui.log.replaceChildren();
      showChat(customerId);
    } catch (_) {
      ui.loginError.textContent = TEXT.network;
      ui.loginError.hidden = false;
    }
  });

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.input.value;
    if (!text.trim() || state.busy) return;
    ui.input.value = "";
    send(text);
  });

  ui.logout.addEventListener("click", () => signOut(true));

  const savedToken = sessionStorage.getItem(TOKEN_KEY);
  const savedCustomer = sessionStorage.getItem(CUSTOMER_KEY);
  if (savedToken && savedCustomer) {
    state.token = savedToken;
    showChat(savedCustomer);
  }
})();
