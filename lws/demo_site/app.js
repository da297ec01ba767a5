// The lws chat page: one WebSocket speaking the "lws-chat" protocol (JSON text).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const status = $("status");
  const text = $("text");
  const nickInput = $("nick");
  const controls = [text, $("send"), nickInput, $("set-nick")];
  let me = "";
  let ws = null;

  const CLOSE_NAMES = {
    1000: "closed", 1001: "server going away", 1006: "connection lost",
    1008: "policy violation", 1009: "message too big", 1011: "server error",
  };

  function setStatus(kind, label) {
    status.className = "status " + kind;
    status.textContent = label;
    document.body.dataset.state = kind;
  }

  function enable(on) {
    for (const el of controls) el.disabled = !on;
  }

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function append(li) {
    const stick = atBottom();
    log.appendChild(li);
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function line(kind, content) {
    const li = document.createElement("li");
    li.className = kind;
    li.textContent = content;
    append(li);
  }

  function clock(seconds) {
    const d = seconds ? new Date(seconds * 1000) : new Date();
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function showMessage(m) {
    const li = document.createElement("li");
    li.className = "message" + (m.nick === me ? " mine" : "");
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = clock(m.time);
    const nick = document.createElement("span");
    nick.className = "nick";
    nick.textContent = m.nick;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = m.text;
    li.append(time, nick, body);
    append(li);
  }

  function showOnline(names) {
    const list = $("online");
    list.replaceChildren(...names.map((name) => {
      const li = document.createElement("li");
      li.textContent = name;
      if (name === me) li.className = "me";
      return li;
    }));
    $("online-count").textContent = String(names.length);
  }

  const handlers = {
    welcome(m) {
      me = m.nick;
      nickInput.value = me;
      for (const entry of m.history) showMessage(entry);
      showOnline(m.online);
      line("event", `You are ${me}. Pick a nick on the right.`);
    },
    presence(m) {
      if (m.event === "nick" && m.old === me) me = m.nick;
      showOnline(m.online);
      if (m.event === "join" && m.nick !== me) line("event", `${m.nick} joined`);
      else if (m.event === "leave") line("event", `${m.nick} left`);
      else if (m.event === "nick") line("event", `${m.old} is now ${m.nick}`);
    },
    message: showMessage,
    error(m) {
      line("error", m.error);
    },
  };

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
    ws = new WebSocket(url, "lws-chat");
    setStatus("connecting", "connecting\u2026");
    ws.onopen = () => {
      setStatus("open", "connected");
      enable(true);
      text.focus();
    };
    ws.onmessage = (event) => {
      let m;
      try {
        m = JSON.parse(event.data);
      } catch (err) {
        line("error", "unreadable message from the server");
        return;
      }
      const handler = handlers[m.type];
      if (handler) handler(m);
    };
    ws.onclose = (event) => {
      enable(false);
      const why = CLOSE_NAMES[event.code] || "closed";
      setStatus("closed", `disconnected: ${event.code} ${why}`);
      line("event", `Disconnected (${event.code} ${why}). Reload the page to join again.`);
      showOnline([]);
    };
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = text.value.trim();
    if (!value) return;
    send({ type: "message", text: value });
    text.value = "";
  });

  $("nick-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = nickInput.value.trim();
    if (value && value !== me) send({ type: "nick", nick: value });
    text.focus();
  });

  connect();
})();
