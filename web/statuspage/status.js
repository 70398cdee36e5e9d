// The on-call status page: polls /api/v1/status and renders it. No external scripts: the
// machine room may have no internet. Text from alerts is set with textContent, never as HTML.
"use strict";

const I18N = {
  en: {
    title: "On duty", redlines: "Red lines", alerts: "Alerts", environment: "Room environment",
    targets_down: "Targets down", log: "Duty log", loading: "Loading…", none: "None",
    all_clear: "No active alerts", on_duty: "On duty", next: "Next", ack: "Acknowledge",
    silence: "Silence 1 h", acked_by: "acknowledged by", firing: "firing", pending: "pending",
    resolved: "resolved", for: "for", red_line_in: "red line in", red_line_crossed:
    "red line crossed", updated: "updated", token_prompt: "API token (kept on this phone)",
    name_prompt: "Your name", note_prompt: "Note (what you are doing)", failed: "Failed",
    temperature: "Temperature", humidity: "Humidity", target: "Target", reason: "Reason",
    muted: "muted", flapping: "flapping", all_up: "All targets up", of: "of",
    critical: "critical", warning: "warning", info: "info", outage: "outage",
    node: "node", active: "active", standby: "standby", active_node: "active",
    silence_reason: "silenced from the status page",
    write_token_prompt: "API token that may write: acknowledge, silence (kept on this device)",
    rooms: "Machine rooms", room: "Room", who: "Who", with_whom: "With whom (comma list)",
    purpose: "Purpose", items: "Items carried", go_in: "In", go_out: "Out", door: "door",
    door_open: "open", door_shut: "shut", door_unknown: "unknown", nobody_in: "nobody in",
    people_in: "in", since: "since", not_approved: "not approved", carrying: "carrying",
    with: "with", confirmed: "confirmed", unconfirmed: "not confirmed yet",
    confirm_duty: "I am on duty", handover: "Hand-over note", handover_prompt: "Hand-over note for the next shift",
    topology: "Topology", down: "down", learned: "LLDP",
  },
  zh: {
    title: "值班", redlines: "红线", alerts: "告警", environment: "机房环境",
    targets_down: "离线设备", log: "值班日志", loading: "加载中…", none: "无",
    all_clear: "当前无告警", on_duty: "值班人员", next: "下一班", ack: "确认",
    silence: "静默 1 小时", acked_by: "已确认：", firing: "告警中", pending: "待定",
    resolved: "已恢复", for: "持续", red_line_in: "距红线", red_line_crossed: "已超红线",
    updated: "更新于", token_prompt: "API 令牌（保存在本机）", name_prompt: "您的姓名",
    note_prompt: "备注（处理措施）", failed: "失败", temperature: "温度", humidity: "湿度",
    target: "设备", reason: "原因", muted: "已抑制", flapping: "抖动", all_up: "所有设备在线",
    of: "/", critical: "严重", warning: "警告", info: "提示", outage: "中断",
    node: "节点", active: "主用", standby: "备用", active_node: "主用节点",
    silence_reason: "从值班页面静默",
    write_token_prompt: "可确认和静默的 API 令牌（保存在本机）",
    rooms: "机房人员", room: "机房", who: "人员", with_whom: "同行人员（逗号分隔）",
    purpose: "事由", items: "携带物品", go_in: "进入", go_out: "离开", door: "门",
    door_open: "打开", door_shut: "关闭", door_unknown: "未知", nobody_in: "无人",
    people_in: "人在内", since: "进入于", not_approved: "未经批准", carrying: "携带",
    with: "同行", confirmed: "已确认到岗", unconfirmed: "尚未确认到岗",
    confirm_duty: "确认到岗", handover: "交班记录", handover_prompt: "交给下一班的交班记录",
    topology: "拓扑（依赖关系）", down: "离线", learned: "LLDP 发现",
  },
};

const params = new URLSearchParams(location.search);
let lang = params.get("lang") || document.documentElement.dataset.lang || "en";
const t = (key) => (I18N[lang] || I18N.en)[key] || I18N.en[key] || key;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// Two units at most, as a glance needs; in Chinese the units a duty engineer reads (as the
// pages' durations: core/configtypes.format_duration).
function fmtDuration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (lang === "zh") {
    if (d) return h ? `${d}天${h}小时` : `${d}天`;
    if (h) return m ? `${h}小时${m}分钟` : `${h}小时`;
    if (m) return `${m}分钟`;
    return `${s}秒`;
  }
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} m`;
  if (m) return `${m} m`;
  return `${s} s`;
}

function fmtTime(ts, tz) {
  try {
    return new Date(ts * 1000).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB",
      { timeZone: tz || undefined, hour12: false });
  } catch (e) { return new Date(ts * 1000).toISOString(); }
}

// Two tokens, kept apart: "dutyd.token" is the one this device reads with (on a wall screen
// the read-only token), "dutyd.write_token" one that may write. An engineer's phone has one
// API token for both, so a write tries the read token when there is no write token.
function writeCredentials() {
  let token = localStorage.getItem("dutyd.write_token") || localStorage.getItem("dutyd.token");
  if (!token) {
    token = prompt(t("write_token_prompt"));
    if (!token) return null;
    localStorage.setItem("dutyd.write_token", token);
  }
  let actor = localStorage.getItem("dutyd.actor");
  if (!actor) { actor = prompt(t("name_prompt")); if (!actor) return null; }
  localStorage.setItem("dutyd.actor", actor);
  return { token, actor };
}

async function post(path, body, retried = false) {
  const cred = writeCredentials();
  if (!cred) return false;
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Dutyd-Token": cred.token },
    body: JSON.stringify({ ...body, actor: cred.actor }),
  });
  if (res.status === 401) {
    // The token may not write. Only a write token is forgotten: the read token still reads,
    // and a wall screen must not lose it to one stray tap. Ask once for a token that writes.
    localStorage.removeItem("dutyd.write_token");
    if (!retried) {
      const given = prompt(t("write_token_prompt"));
      if (given) {
        localStorage.setItem("dutyd.write_token", given);
        return post(path, body, true);
      }
    }
  }
  if (!res.ok) {
    let why = res.statusText;
    try { why = (await res.json()).error || why; } catch (e) { /* not JSON */ }
    alert(`${t("failed")}: ${why}`);
  }
  refresh();
  return res.ok;
}

function ack(alert) {
  const note = prompt(t("note_prompt"), "") ?? null;
  if (note === null) return;
  post("/api/v1/ack", { alert: alert.fingerprint, note });
}

function silence(alert) {
  post("/api/v1/silences", {
    matchers: { alertname: alert.rule, target: alert.labels.target || "" },
    duration: "1h", reason: t("silence_reason"),
  });
}

function renderAlerts(alerts, now) {
  const box = document.getElementById("alerts");
  box.replaceChildren();
  if (!alerts.length) { box.append(el("p", { class: "good" }, t("all_clear"))); return; }
  for (const a of alerts) {
    const badges = [el("span", { class: `badge ${a.state}` }, t(a.state))];
    if (a.acknowledged) badges.push(el("span", { class: "badge acked" }, `${t("acked_by")} ${a.acknowledged.by}`));
    if (a.flapping) badges.push(el("span", { class: "badge" }, t("flapping")));
    if (a.suppressed) badges.push(el("span", { class: "badge" }, `${t("muted")}: ${a.suppressed}`));
    const card = el("div", { class: `alert ${a.severity} ${a.state}`, "data-fingerprint": a.fingerprint },
      el("div", { class: "head" },
        el("span", { class: "name" }, a.rule, ...badges),
        el("span", { class: "muted" }, `${t(a.severity)} · ${t("for")} ${fmtDuration(a.duration)}`)),
      el("div", {}, a.summary));
    if (a.acknowledged && a.acknowledged.note) card.append(el("div", { class: "muted" }, a.acknowledged.note));
    if (a.state !== "resolved") {
      const actions = el("div");
      if (!a.acknowledged) actions.append(el("button", { class: "ack", onclick: () => ack(a) }, t("ack")));
      actions.append(el("button", { class: "silence", onclick: () => silence(a) }, t("silence")));
      card.append(actions);
    }
    box.append(card);
  }
}

function renderRedLines(alerts) {
  const list = document.getElementById("redlines");
  list.replaceChildren();
  const lines = alerts.filter((a) => a.red_line && a.state === "firing");
  document.getElementById("redlines-section").hidden = !lines.length;
  for (const a of lines) {
    // Outage time excludes maintenance windows, as the red line does.
    const outage = a.outage ?? a.duration, left = a.red_line - outage;
    const crossed = left <= 0;
    const head = `${a.labels.target || a.rule}: ${a.rule}, ${t("outage")} ${fmtDuration(outage)}`;
    const text = crossed ? `${head}, ${t("red_line_crossed")}`
      : `${head}, ${t("red_line_in")} ${fmtDuration(left)}`;
    list.append(el("li", { class: crossed ? "crossed" : "" }, text));
  }
}

function renderEnvironment(rows) {
  const box = document.getElementById("environment");
  box.replaceChildren();
  if (!rows.length) { box.append(el("p", { class: "muted" }, t("none"))); return; }
  const table = el("table", {}, el("tr", {}, el("th", {}, t("target")),
    el("th", {}, t("temperature")), el("th", {}, t("humidity"))));
  for (const r of rows) {
    const temp = r.temperature_celsius, hum = r.humidity_percent;
    table.append(el("tr", {},
      el("td", {}, r.room ? `${r.room} (${r.target})` : r.target),
      el("td", { class: temp == null ? "" : (temp < 18 || temp > 26 ? "bad" : "good") },
        temp == null ? "–" : `${temp.toFixed(1)} °C`),
      el("td", { class: hum == null ? "" : (hum < 40 || hum > 60 ? "bad" : "good") },
        hum == null ? "–" : `${hum.toFixed(0)} %RH`)));
  }
  box.append(table);
}

// Who is in each machine room (the entry register), and the form to register in or out.
function renderRooms(rooms, tz) {
  document.getElementById("rooms-section").hidden = !rooms.length;
  const box = document.getElementById("rooms");
  box.replaceChildren();
  for (const r of rooms) {
    const door = r.door_open === null ? t("door_unknown") : t(r.door_open ? "door_open" : "door_shut");
    const head = r.people.length ? `${r.people.length} ${t("people_in")}` : t("nobody_in");
    const card = el("div", { class: "room", "data-room": r.room },
      el("div", { class: "head" }, el("span", { class: "name" }, r.room),
        el("span", { class: r.door_open ? "bad" : "muted" }, `${t("door")}: ${door}`)),
      el("div", { class: "muted" }, head));
    const list = el("ul", { class: "people" });
    for (const p of r.people) {
      const parts = [`${p.person}`, `${t("since")} ${fmtTime(p.since, tz)}`];
      if (p.purpose) parts.push(p.purpose);
      if (p.companions.length) parts.push(`${t("with")} ${p.companions.join(", ")}`);
      if (p.items) parts.push(`${t("carrying")} ${p.items}`);
      const item = el("li", { "data-person": p.person }, parts.join(" · "));
      if (!p.approved) item.append(el("span", { class: "badge firing" }, t("not_approved")));
      list.append(item);
    }
    card.append(list);
    box.append(card);
  }
  const select = document.getElementById("entry-room");
  const chosen = select.value;
  const names = rooms.map((r) => r.room);
  if (select.options.length !== names.length || names.some((n, i) => select.options[i].value !== n)) {
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(chosen)) select.value = chosen;
  }
}

async function register(direction) {
  const value = (id) => document.getElementById(id).value.trim();
  const companions = value("entry-with").split(/[,，、]/).map((x) => x.trim()).filter(Boolean);
  const body = { direction, room: value("entry-room"), with: companions,
    purpose: value("entry-purpose"), items: value("entry-items") };
  const person = value("entry-person") || localStorage.getItem("dutyd.actor") || "";
  if (await post("/api/v1/entries", { ...body, person })) {
    for (const id of ["entry-person", "entry-with", "entry-purpose", "entry-items"]) {
      document.getElementById(id).value = "";
    }
  }
}

document.getElementById("entry-in").addEventListener("click", () => register("in"));
document.getElementById("entry-out").addEventListener("click", () => register("out"));

function renderTargets(status) {
  const box = document.getElementById("targets");
  box.replaceChildren();
  if (!status.targets_down.length) {
    box.append(el("p", { class: "good" }, `${t("all_up")} (${status.targets_up} ${t("of")} ${status.targets_total})`));
    return;
  }
  const table = el("table", {}, el("tr", {}, el("th", {}, t("target")), el("th", {}, t("reason"))));
  for (const d of status.targets_down) {
    table.append(el("tr", {}, el("td", { class: "bad" }, d.name), el("td", {}, d.message || d.reason)));
  }
  box.append(table);
}

// The depends_on tree (each target under its first parent), targets down marked: how far an
// outage reaches. Hidden when no target has a parent.
function renderTopology(topology, down) {
  const section = document.getElementById("topology-section");
  const box = document.getElementById("topology");
  box.replaceChildren();
  const parents = (topology && topology.parents) || {};
  const learned = (topology && topology.learned) || {};
  const names = Object.keys(parents);
  const children = {};
  for (const n of names) {
    const first = (parents[n] || [])[0];
    if (first) (children[first] = children[first] || []).push(n);
  }
  section.hidden = !Object.keys(children).length;
  const seen = new Set();
  const node = (name) => {
    const isDown = down.has(name);
    const li = el("li", { class: isDown ? "bad" : "", "data-target": name },
      isDown ? `${name} (${t("down")})` : name);
    const link = learned[name];
    if (link) li.append(el("span", { class: "muted" }, ` · ${t("learned")} ${link.parent}${link.port ? " " + link.port : ""}`));
    if (seen.has(name)) return li;
    seen.add(name);
    const kids = children[name] || [];
    if (kids.length) {
      const ul = el("ul");
      for (const kid of kids) ul.append(node(kid));
      li.append(ul);
    }
    return li;
  };
  const tree = el("ul", { class: "tree" });
  for (const n of names) {
    const first = (parents[n] || [])[0];
    if ((!first || !(first in parents)) && children[n]) tree.append(node(n));
  }
  box.append(tree);
}

function renderOncall(oncall) {
  const box = document.getElementById("oncall");
  box.replaceChildren();
  if (!oncall) return;
  box.append(el("div", {}, `${t("on_duty")}: ${oncall.now.join(", ") || t("none")}`));
  if (oncall.next && oncall.next.length) box.append(el("div", { class: "muted" }, `${t("next")}: ${oncall.next.join(", ")}`));
}

// The shift check-in: who of the shift confirmed, and the buttons to confirm or hand over.
function renderShift(shift) {
  const box = document.getElementById("shift");
  box.replaceChildren();
  if (!shift) return;
  const done = Object.keys(shift.confirmed);
  box.append(el("div", { class: done.length ? "good" : "bad" },
    done.length ? `${t("confirmed")}: ${done.join(", ")}` : t("unconfirmed")));
  box.append(el("button", { class: "confirm-duty", onclick: () => post("/api/v1/shift/confirm", {}) }, t("confirm_duty")));
  box.append(el("button", { class: "handover", onclick: () => {
    const note = prompt(t("handover_prompt"), "");
    if (note) post("/api/v1/shift/handover", { note });
  } }, t("handover")));
}

function renderCluster(cluster) {
  const box = document.getElementById("cluster");
  box.replaceChildren();
  if (!cluster || !cluster.enabled) return;
  const role = t(cluster.active ? "active" : "standby");
  box.append(el("div", { class: cluster.active_node ? "muted" : "bad" },
    `${t("node")} ${cluster.node} (${role}) · ${t("active_node")}: ${cluster.active_node || t("none")}`));
}

function renderLog(entries, tz) {
  const list = document.getElementById("log");
  list.replaceChildren();
  for (const e of entries) list.append(el("li", {}, `${fmtTime(e.timestamp, tz)} ${e.text}`));
}

async function refresh() {
  try {
    // Reads need a token (the read-only one, or one that also writes) unless basic auth
    // or api.open_loopback_reads lets them through.
    const token = localStorage.getItem("dutyd.token") || localStorage.getItem("dutyd.write_token");
    const headers = token ? { "X-Dutyd-Token": token } : {};
    const res = await fetch(`/api/v1/status?lang=${encodeURIComponent(lang)}`,
      { cache: "no-store", headers });
    if (res.status === 401 || res.status === 403) {
      localStorage.removeItem("dutyd.token");
      const given = prompt(t("token_prompt"));
      if (given) { localStorage.setItem("dutyd.token", given); return refresh(); }
      throw new Error((await res.json()).error);
    }
    const s = await res.json();
    if (!params.get("lang") && s.language) lang = s.language;
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    renderOncall(s.oncall);
    renderCluster(s.cluster);
    renderShift(s.shift);
    renderRedLines(s.alerts);
    renderAlerts(s.alerts, s.generated_at);
    renderEnvironment(s.environment);
    renderRooms(s.rooms || [], s.timezone);
    renderTargets(s);
    renderTopology(s.topology, new Set(s.targets_down.map((d) => d.name)));
    renderLog(s.log, s.timezone);
    document.getElementById("clock").textContent = fmtTime(s.generated_at, s.timezone);
    document.getElementById("updated").textContent = `${t("updated")} ${fmtTime(s.generated_at, s.timezone)}`;
    document.body.dataset.loaded = "1";
  } catch (e) {
    document.getElementById("updated").textContent = `${t("failed")}: ${e}`;
  }
}

refresh();
setInterval(refresh, 5000);
