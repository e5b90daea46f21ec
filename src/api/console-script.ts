/**
 * The console's script (GET /assets/console.js), run by the browser. Every call it makes is a
 * documented API call (docs/api.md); test/daemon/console.test.ts checks that each path it names is
 * in that document's table of routes.
 *
 * - Auth: the token from the URL fragment (#token=…, removed from the address bar at once) or from
 *   the login form, kept in the tab's sessionStorage and sent as a bearer token. No prompt().
 * - Rates: the API's `rates` (GET /v1/stats: the daemon's last second), never derived from polls.
 * - Charts: the daemon's history (GET /v1/history), the whole 15 minutes at first, then what is new.
 * - Events: GET /v1/events read as a stream with fetch (an EventSource cannot send the token).
 *
 * Plain JavaScript of today's browsers, no build step: it is served as it is written here.
 */
export const CONSOLE_JS = String.raw`"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var esc = function (s) { return String(s).replace(/[&<>"']/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]; }); };
  var fmt = function (n) { return n === null || n === undefined || isNaN(n) ? "–" : Math.round(n).toLocaleString("en-US"); };
  var short = function (n) {
    if (n === null || n === undefined || isNaN(n)) return "–";
    var a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(2) + " G";
    if (a >= 1e6) return (n / 1e6).toFixed(2) + " M";
    if (a >= 1e4) return (n / 1e3).toFixed(1) + " k";
    if (a < 10 && n !== Math.round(n)) return n.toFixed(1);
    return fmt(n);
  };
  var bytes = function (n) {
    if (n === null || n === undefined || isNaN(n)) return "–";
    var u = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < 4) { n /= 1000; i++; }
    return n.toFixed(i ? 1 : 0) + " " + u[i];
  };
  var pct = function (x) { return x === null || x === undefined || isNaN(x) ? "–" : (100 * x).toFixed(1) + "%"; };
  var per = function (ms) { return ms === 3600000 ? "h" : ms === 60000 ? "min" : "s"; };
  var CAP = 900;
  var PASSES = { pass: 1, mgmt: 1, allowlist: 1 };
  var COLORS = ["#c0392b", "#e67e22", "#8e44ad", "#2c3e50", "#16a085", "#d35400", "#7f8c8d", "#2980b9", "#b8860b", "#6d214f", "#1abc9c", "#34495e"];

  var S = {
    token: sessionStorage.getItem("sluice-token"), place: null, status: null, hist: null, lastT: undefined,
    top: [], topAt: 0, sort: { key: "usage", dir: -1 }, policy: null, events: [], evAbort: null, evKey: "",
    charts: {}, sigs: {}, tick: 0, busy: false, authFailed: false,
  };

  // A token in the fragment (a link from the operator's own notes, or a tunnel script): kept in
  // the tab and taken out of the address bar, so that it is neither shown nor kept in history.
  function fragmentToken() {
    var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!m) return false;
    S.token = decodeURIComponent(m[1]);
    sessionStorage.setItem("sluice-token", S.token);
    history.replaceState(null, "", location.pathname + location.search);
    return true;
  }
  fragmentToken();
  // A link with the token followed while the page is open (only the fragment changes: no reload).
  window.addEventListener("hashchange", function () {
    if (!fragmentToken()) return;
    $("login").hidden = true;
    S.authFailed = false;
    refresh(true);
  });

  function Unauthorized(msg) { this.message = msg; }

  function api(method, path, body) {
    var headers = {};
    if (S.token) headers.authorization = "Bearer " + S.token;
    if (body !== undefined) headers["content-type"] = "application/json";
    return fetch(path, { method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" }).then(function (r) {
      if (r.status === 401) { showLogin(S.token ? "the token was refused" : ""); throw new Unauthorized("the API needs its token"); }
      return r.json().catch(function () { return null; }).then(function (j) {
        if (!r.ok) throw new Error(j && j.error ? j.error.code + ": " + j.error.message : method + " " + path + ": HTTP " + r.status);
        return j;
      });
    });
  }

  function showLogin(why) {
    S.authFailed = true;
    $("main").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = why || "";
    $("token-input").focus();
  }

  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    S.token = $("token-input").value.trim();
    sessionStorage.setItem("sluice-token", S.token);
    $("token-input").value = "";
    $("login").hidden = true;
    S.authFailed = false;
    S.hist = null; S.lastT = undefined;
    refresh();
  });

  var noticeTimer, noticeSeq = 0;
  function notice(text, error) {
    var n = $("notice");
    noticeSeq++;
    n.dataset.seq = String(noticeSeq);
    n.textContent = text;
    n.dataset.state = error ? "error" : "ok";
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { n.hidden = true; }, error ? 10000 : 5000);
  }

  // A confirmation in the page (window.confirm blocks the page, and headless browsers dismiss it).
  function ask(text) {
    return new Promise(function (res) {
      var d = $("confirm");
      $("confirm-text").textContent = text;
      d.returnValue = "";
      d.onclose = function () { res(d.returnValue === "ok"); };
      d.showModal();
    });
  }

  function act(question, method, path, body, done) {
    return ask(question).then(function (yes) {
      if (!yes) return;
      return api(method, path, body).then(function (r) {
        notice(done(r));
        S.topAt = 0;
        return refresh(true);
      }, function (e) { if (!(e instanceof Unauthorized)) notice(e.message, true); });
    });
  }

  var placeBody = function (extra) {
    var b = { iface: S.place.iface };
    if (S.place.netns) b.netns = S.place.netns;
    for (var k in extra) b[k] = extra[k];
    return b;
  };
  var placeQuery = function () { return "iface=" + encodeURIComponent(S.place.iface) + (S.place.netns ? "&netns=" + encodeURIComponent(S.place.netns) : ""); };
  var placeName = function (p) { return p.iface + (p.netns ? " (netns " + p.netns + ")" : ""); };

  // ------------------------------------------------------------------------------------------
  // Interfaces

  function loadStatus() {
    return api("GET", "/v1/status").then(function (st) {
      S.status = st;
      var list = (st.interfaces || []);
      var sel = $("iface-select");
      var want = list.map(function (i) { return JSON.stringify([i.iface, i.netns]); }).join("|");
      if (sel.dataset.list !== want) {
        sel.dataset.list = want;
        sel.innerHTML = list.map(function (i, n) { return "<option value=" + n + ">" + esc(placeName(i)) + (i.protected ? "" : " (not protected)") + "</option>"; }).join("");
      }
      if (!S.place && list.length) {
        var first = list.findIndex(function (i) { return i.protected; });
        choose(list[first < 0 ? 0 : first]);
      }
      var cur = S.place && list.find(function (i) { return i.iface === S.place.iface && i.netns === S.place.netns; });
      if (cur) {
        sel.value = String(list.indexOf(cur));
        S.place.info = cur;
        renderLimits(cur);
      }
    });
  }

  $("iface-select").addEventListener("change", function () {
    var i = (S.status.interfaces || [])[Number(this.value)];
    if (i) { choose(i); refresh(true); }
  });

  function choose(i) {
    S.place = { iface: i.iface, netns: i.netns, info: i };
    S.hist = null; S.lastT = undefined; S.top = []; S.topAt = 0; S.policy = null; S.events = [];
    for (var k in S.charts) { S.charts[k].destroy(); }
    S.charts = {}; S.sigs = {};
    startEvents();
  }

  function renderLimits(i) {
    var l = i.limits;
    if (!l) { $("limits-now").textContent = i.error ? "not protected: " + i.error.message : ""; return; }
    var parts = [];
    if (l.rate !== null) parts.push(fmt(l.rate) + " packets/" + per(l.rate_period_ms) + (l.burst ? " (burst " + fmt(l.burst) + ")" : ""));
    if (l.bytes_rate !== null) parts.push(bytes(l.bytes_rate) + "/" + per(l.bytes_period_ms) + (l.bytes_burst ? " (burst " + bytes(l.bytes_burst) + ")" : ""));
    $("limits-now").textContent = "now: " + parts.join(" and ") + ", " + l.algorithm + ", per /" + l.key_v4 + " and /" + l.key_v6 + " (from " + (i.limits_from || "config") + ")";
    $("where").textContent = (i.mode || "") + " XDP, program " + (i.program_id || "?");
  }

  $("limits-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var limits = {};
    var rate = $("limit-rate").value.trim(), burst = $("limit-burst").value.trim();
    if (rate) limits.rate = rate;
    if (burst) limits.burst = /^\d+$/.test(burst) ? Number(burst) : burst;
    if (!rate && !burst) { notice("give a rate, a burst, or both", true); return; }
    act("Set the limits of " + placeName(S.place) + " to" + (rate ? " rate " + rate : "") + (burst ? " burst " + burst : "") + "? The next packet obeys them.",
      "PUT", "/v1/limits", placeBody({ limits: limits }), function (r) {
        return "limits of " + placeName(S.place) + " set: " + fmt(r.limits.rate) + " packets/" + per(r.limits.rate_period_ms) + ", burst " + fmt(r.limits.burst);
      }).then(function () { loadStatus(); });
  });

  // ------------------------------------------------------------------------------------------
  // Rates and history

  function renderStats(s) {
    var r = s.rates;
    var set = function (id, v, text) { var e = $(id); e.textContent = text; e.dataset.value = v === null || v === undefined ? "" : String(v); };
    set("kpi-allowed-pps", r && r.allowed_pps, r ? short(r.allowed_pps) : "–");
    set("kpi-dropped-pps", r && r.dropped_pps, r ? short(r.dropped_pps) : "–");
    set("kpi-allowed-bps", r && r.allowed_bps, r ? bytes(r.allowed_bps) : "–");
    set("kpi-dropped-bps", r && r.dropped_bps, r ? bytes(r.dropped_bps) : "–");
    set("kpi-drop-rate", r && r.drop_rate, r ? pct(r.drop_rate) : "–");
    set("kpi-new-states", r && r.new_states_per_sec, r ? short(r.new_states_per_sec) : "–");
    $("kpi-drop-total").textContent = pct(s.drop_rate);
    ["kpi-allowed-pps", "kpi-dropped-pps"].forEach(function (id) { $(id).dataset.at = r && r.at ? r.at : ""; $(id).dataset.seconds = r ? String(r.seconds) : ""; });
    $("rates-note").textContent = r ? "rates over the daemon's last " + r.seconds.toFixed(2) + " s, to " + new Date(r.at).toLocaleTimeString() + "; totals since attach: " + fmt(s.allowed_packets) + " passed (" + bytes(s.allowed_bytes) + "), " + fmt(s.dropped_packets) + " dropped (" + bytes(s.dropped_bytes) + ")" : "no rates yet (the daemon reads the counters every second)";
  }

  function appendHistory(h) {
    if (!S.hist) { S.hist = h; }
    else if (h.t.length) {
      var H = S.hist, n = H.t.length;
      ["t", "seconds", "allowed_pps", "dropped_pps", "allowed_bps", "dropped_bps", "new_states_per_sec", "state_entries", "state_max_entries"].forEach(function (k) { H[k] = H[k].concat(h[k]); });
      var zeros = function (len) { var a = []; for (var i = 0; i < len; i++) a.push(0); return a; };
      Object.keys(h.reasons).forEach(function (k) { H.reasons[k] = (H.reasons[k] || zeros(n)).concat(h.reasons[k]); });
      Object.keys(H.reasons).forEach(function (k) { if (!h.reasons[k]) H.reasons[k] = H.reasons[k].concat(zeros(h.t.length)); });
      var byId = {};
      H.rules.forEach(function (r) { byId[r.id] = r; });
      h.rules.forEach(function (r) {
        var o = byId[r.id];
        if (!o) { o = { id: r.id, name: r.name, allowed_pps: zeros(n), dropped_pps: zeros(n) }; H.rules.push(o); byId[r.id] = o; }
        o.name = r.name;
        o.allowed_pps = o.allowed_pps.concat(r.allowed_pps); o.dropped_pps = o.dropped_pps.concat(r.dropped_pps);
      });
      H.rules.forEach(function (o) { if (o.allowed_pps.length < H.t.length) { o.allowed_pps = o.allowed_pps.concat(zeros(H.t.length - o.allowed_pps.length)); o.dropped_pps = o.dropped_pps.concat(zeros(H.t.length - o.dropped_pps.length)); } });
    }
    var H2 = S.hist, over = H2.t.length - CAP;
    if (over > 0) {
      ["t", "seconds", "allowed_pps", "dropped_pps", "allowed_bps", "dropped_bps", "new_states_per_sec", "state_entries", "state_max_entries"].forEach(function (k) { H2[k] = H2[k].slice(over); });
      Object.keys(H2.reasons).forEach(function (k) { H2.reasons[k] = H2.reasons[k].slice(over); });
      H2.rules.forEach(function (r) { r.allowed_pps = r.allowed_pps.slice(over); r.dropped_pps = r.dropped_pps.slice(over); });
    }
    if (H2.t.length) S.lastT = H2.t[H2.t.length - 1];
  }

  function chart(id, series, data, o) {
    var el = $(id);
    var sig = series.map(function (s) { return s.label; }).join("|");
    var u = S.charts[id];
    if (u && S.sigs[id] !== sig) { u.destroy(); u = null; }
    if (!u) {
      // Whole seconds and up on the time axis, however wide the chart.
      var axes = [{ incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900] }, { size: o && o.bytes ? 76 : 64, values: function (self, ticks) { return ticks.map(o && o.bytes ? bytes : short); } }];
      var scales = { x: { time: true } };
      if (o && o.right) {
        axes.push({ side: 1, scale: "pct", size: 50, grid: { show: false }, values: function (self, ticks) { return ticks.map(function (t) { return t.toFixed(0) + "%"; }); } });
        scales.pct = { range: [0, 100] };
      }
      u = new uPlot({ width: Math.max(300, el.clientWidth || 560), height: 190, series: [{}].concat(series), axes: axes, scales: scales, legend: { live: true }, cursor: { drag: { x: false, y: false } } }, data, el);
      S.charts[id] = u; S.sigs[id] = sig;
    } else {
      u.setData(data);
      // Laid out after the chart was made (the page was hidden then): take the width there is.
      var w = Math.max(300, el.clientWidth);
      if (Math.abs(u.width - w) > 4) u.setSize({ width: w, height: 190 });
    }
    el.dataset.points = String(data[0].length);
  }

  function renderCharts() {
    var H = S.hist;
    if (!H || typeof uPlot === "undefined") return;
    var x = H.t.map(function (t) { return t / 1000; });
    chart("chart-packets", [
      { label: "passed", stroke: "#1f8a4c", fill: "rgba(31,138,76,0.08)", width: 1.5 },
      { label: "dropped", stroke: "#c0392b", fill: "rgba(192,57,43,0.08)", width: 1.5 },
    ], [x, H.allowed_pps, H.dropped_pps]);
    chart("chart-bytes", [
      { label: "passed", stroke: "#1f8a4c", width: 1.5, value: function (u, v) { return bytes(v) + "/s"; } },
      { label: "dropped", stroke: "#c0392b", width: 1.5, value: function (u, v) { return bytes(v) + "/s"; } },
    ], [x, H.allowed_bps, H.dropped_bps], { bytes: true });
    // Stacked: series j draws the sum of reasons j.. over the ones before it, so each band is one reason.
    var names = Object.keys(H.reasons).filter(function (k) { return !PASSES[k]; }).sort();
    var raw = names.map(function (k) { return H.reasons[k]; });
    if (!names.length) { names = ["no drops"]; raw = [x.map(function () { return 0; })]; }
    var cum = raw.map(function (_, j) { return x.map(function (_, i) { var s = 0; for (var q = j; q < raw.length; q++) s += raw[q][i]; return s; }); });
    chart("chart-reasons", names.map(function (k, j) {
      return { label: k, stroke: COLORS[j % COLORS.length], fill: COLORS[j % COLORS.length] + "55", width: 1, value: function (u, v, si, idx) { return idx === null || idx === undefined ? "–" : short(raw[j][idx]); } };
    }), [x].concat(cum));
    chart("chart-states", [
      { label: "new states/s", stroke: "#2980b9", width: 1.5 },
      { label: "state map fill", stroke: "#8e44ad", width: 1.5, scale: "pct", value: function (u, v) { return v === null || v === undefined ? "–" : v.toFixed(1) + "%"; } },
    ], [x, H.new_states_per_sec, H.state_entries.map(function (e, i) { return e === null ? null : 100 * e / H.state_max_entries[i]; })], { right: true });
    var rs = [], rd = [x];
    H.rules.forEach(function (r, j) {
      var name = (r.name || ("rule " + r.id));
      rs.push({ label: name + " passed", stroke: COLORS[(2 * j + 4) % COLORS.length], width: 1.5 });
      rs.push({ label: name + " dropped", stroke: COLORS[(2 * j) % COLORS.length], width: 1.5, dash: [4, 3] });
      rd.push(r.allowed_pps, r.dropped_pps);
    });
    chart("chart-rules", rs, rd);
    var last = H.state_entries.length ? H.state_entries[H.state_entries.length - 1] : null;
    $("kpi-entries").textContent = fmt(last);
    $("kpi-max").textContent = fmt(H.state_max_entries.length ? H.state_max_entries[H.state_max_entries.length - 1] : null);
  }

  window.addEventListener("resize", function () {
    for (var id in S.charts) { var el = $(id); S.charts[id].setSize({ width: Math.max(300, el.clientWidth), height: 190 }); }
  });

  // ------------------------------------------------------------------------------------------
  // Top talkers

  function v4(text) {
    var m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
    if (!m) return null;
    return ((+m[1] << 24) >>> 0) + (+m[2] << 16) + (+m[3] << 8) + (+m[4]);
  }
  function matches(key, filter) {
    if (!filter) return true;
    var addr = key.split("/")[0];
    var f = filter.split("/");
    var a = v4(addr), b = v4(f[0]);
    if (f.length === 2 && a !== null && b !== null) {
      var len = Number(f[1]);
      if (!(len >= 0 && len <= 32)) return false;
      var mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      return ((a & mask) >>> 0) === ((b & mask) >>> 0);
    }
    return addr.toLowerCase().indexOf(filter.toLowerCase().split("/")[0]) === 0;
  }

  function listed(prefix) {
    var p = S.policy;
    if (!p) return null;
    var d = p.lists.deny.find(function (e) { return e.prefix === prefix; });
    if (d) return { list: "deny", entry: d };
    var a = p.lists.allow.find(function (e) { return e.prefix === prefix; });
    if (a) return { list: "allow", entry: a };
    return null;
  }

  function stateOf(e) {
    var l = listed(e.key);
    if (l) return l.list === "deny" ? (l.entry.until ? "blocked" : "deny") : "allow";
    if (e.blocked) return "blocked";
    return e.usage >= 0.9 || e.available === 0 ? "at limit" : "ok";
  }

  // A source's packets/s decided (passed + dropped) between the last two walks of the map, or its bounds.
  function ppsText(e) {
    if (e.pps !== null && e.pps !== undefined) return short(e.pps);
    if (e.pps_min !== null && e.pps_min !== undefined) return e.pps_max !== null && e.pps_max !== undefined ? short(e.pps_min) + "–" + short(e.pps_max) : "≥" + short(e.pps_min);
    return "?";
  }

  function renderTop() {
    var f = $("top-filter").value.trim();
    var rows = S.top.filter(function (e) { return matches(e.key, f); }).map(function (e) {
      var o = {}; for (var k in e) o[k] = e[k];
      o.state = stateOf(e);
      o.ppsSort = e.pps !== null && e.pps !== undefined ? e.pps : e.pps_min !== null && e.pps_min !== undefined ? e.pps_min : -1;
      return o;
    });
    var k = S.sort.key === "pps" ? "ppsSort" : S.sort.key, dir = S.sort.dir;
    rows.sort(function (a, b) { var x = a[k], y = b[k]; return (x < y ? -1 : x > y ? 1 : 0) * dir; });
    document.querySelectorAll("#top-table th[data-sort]").forEach(function (th) {
      th.classList.toggle("sorted", th.dataset.sort === S.sort.key);
      th.classList.toggle("asc", th.dataset.sort === S.sort.key && dir > 0);
    });
    var rules = {};
    (S.policy ? S.policy.rules : []).forEach(function (r) { rules[r.id] = r.name || String(r.id); });
    $("top-table").tBodies[0].innerHTML = rows.map(function (e) {
      var st = e.state, l = listed(e.key);
      var btn = function (action, text) { return "<button data-action=" + action + " data-key=\"" + esc(e.key) + "\">" + text + "</button>"; };
      var actions = l ? btn(l.list === "deny" ? "unblock" : "unallow", l.list === "deny" ? (l.entry.until ? "Unblock" : "Remove deny") : "Remove allow")
        : btn("block", "Block") + " " + btn("deny", "Deny") + " " + btn("allow", "Allow");
      return "<tr data-key=\"" + esc(e.key) + "\"><td>" + esc(e.key) + "</td><td>" + esc(rules[e.rule] || e.rule) + "</td><td>" + (100 * e.usage).toFixed(0) + "%</td><td>" + fmt(e.available) + "</td><td>" + ppsText(e) + "</td><td class=drop>" + fmt(e.dropped) + "</td><td>" + (e.idle_ms / 1000).toFixed(1) + " s</td><td><span class=\"tag " + esc(st.replace(" ", "-")) + "\">" + esc(st) + "</span></td><td>" + actions + "</td></tr>";
    }).join("") || "<tr><td colspan=9 class=muted>no source tracked" + (f ? " under " + esc(f) : "") + "</td></tr>";
  }

  document.querySelectorAll("#top-table th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () {
      var k = th.dataset.sort;
      if (S.sort.key === k) S.sort.dir = -S.sort.dir; else { S.sort.key = k; S.sort.dir = k === "key" || k === "rule" ? 1 : -1; }
      renderTop();
    });
  });
  $("top-filter").addEventListener("input", renderTop);

  function listAction(action, prefix) {
    var forText = $("block-for").value;
    var q = {
      block: ["Block " + prefix + " on " + placeName(S.place) + " for " + forText + "? Every packet from it is dropped (deny list) until then.", { list: "deny", op: "add", prefix: prefix, "for": forText }, "blocked " + prefix + " for " + forText],
      deny: ["Deny " + prefix + " on " + placeName(S.place) + " until it is removed?", { list: "deny", op: "add", prefix: prefix }, "denied " + prefix],
      allow: ["Allow " + prefix + " on " + placeName(S.place) + "? Its packets pass every limit until it is removed.", { list: "allow", op: "add", prefix: prefix }, "allowed " + prefix],
      unblock: ["Take " + prefix + " off the deny list of " + placeName(S.place) + "?", { list: "deny", op: "del", prefix: prefix }, "unblocked " + prefix],
      unallow: ["Take " + prefix + " off the allow list of " + placeName(S.place) + "?", { list: "allow", op: "del", prefix: prefix }, "removed " + prefix + " from the allow list"],
    }[action];
    if (!q) return;
    act(q[0], "POST", "/v1/lists", placeBody(q[1]), function () { return q[2]; });
  }

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest && ev.target.closest("button[data-action]");
    if (!b) return;
    var a = b.dataset.action;
    if (b.dataset.key) return listAction(a, b.dataset.key);
    if (a === "dry-run" || a === "enforce") {
      var rule = b.dataset.rule;
      return act(a === "dry-run" ? "Switch rule " + rule + " to dry-run? It counts what it would drop and passes it." : "Switch rule " + rule + " back to enforcing (the mode its policy file gives it)?",
        "POST", "/v1/rules/mode", placeBody({ rule: rule, mode: a }), function (r) { return "rule " + rule + ": " + r.rule.mode + " (policy version " + r.version + ")"; });
    }
    if (a === "confirm") return act("Keep the change applied with --confirm-within? It is not rolled back then.", "POST", "/v1/policy/confirm", placeBody({}), function (r) { return r.confirmed ? "confirmed: no rollback" : "nothing was pending"; });
    if (a === "rollback") return act("Roll the pending change back now, to the settings from before it?", "POST", "/v1/policy/rollback", placeBody({}), function (r) { return r.rolled_back ? "rolled back" : "nothing was pending"; });
  });

  // ------------------------------------------------------------------------------------------
  // Policy (read-only, with the two switches)

  function limitText(l) {
    var parts = [];
    if (l.rate !== null) parts.push(short(l.rate) + "/" + per(l.rate_period_ms) + (l.burst ? " +" + short(l.burst) : ""));
    if (l.bytes_rate !== null) parts.push(bytes(l.bytes_rate) + "/" + per(l.bytes_period_ms));
    return parts.join(", ") + " " + l.algorithm + (l.key === "rule" ? " per rule" : "");
  }

  function renderPolicy() {
    var p = S.policy;
    if (!p) return;
    $("kpi-version").textContent = String(p.version);
    $("policy-head").textContent = "version " + p.version + ", changed " + (p.changed_at ? new Date(p.changed_at).toLocaleString() : "?") + (p.file ? ", from " + p.file : "") + "; default limits from " + p.limits_from;
    var rb = p.rollback;
    $("pending").innerHTML = rb ? "<div class=box><b>A change awaits confirmation</b>: " + esc(rb.applied || "") + " (" + esc(rb.state) + (rb.rollback_at ? ", rolls back at " + esc(new Date(rb.rollback_at).toLocaleTimeString()) : "") + "). " +
      "<button data-action=confirm>Confirm</button> <button data-action=rollback class=danger>Roll back now</button></div>" : "";
    $("rules-table").tBodies[0].innerHTML = p.rules.map(function (r) {
      var name = r.name || String(r.id);
      var sw = r.id === 0 ? "<span class='muted small'>limits above</span>" : r.mode === "dry-run"
        ? (r.dry_run_from === "api" ? "<button data-action=enforce data-rule=\"" + esc(name) + "\">Enforce</button>" : "<span class='muted small'>dry-run in its file</span>")
        : "<button data-action=dry-run data-rule=\"" + esc(name) + "\">Dry-run</button>";
      return "<tr data-rule=\"" + esc(name) + "\"><td>" + esc(r.id + " " + (r.name || "")) + "</td><td><span class=\"tag " + (r.mode === "dry-run" ? "dry-run" : "") + "\">" + esc(r.mode) + "</span>" + (r.action === "block" ? " <span class=tag>block " + (r.limit.block_ms / 1000) + " s</span>" : "") + "</td><td>" + esc(limitText(r.limit)) + "</td><td class=pass>" + fmt(r.counters.allowed_packets) + "</td><td class=drop>" + fmt(r.counters.dropped_packets) + "</td><td>" + fmt(r.counters.would_drop) + "</td><td>" + fmt(r.counters.blocked) + "</td><td>" + sw + "</td></tr>";
    }).join("");
    var rows = [];
    ["deny", "allow", "mgmt"].forEach(function (n) {
      p.lists[n].forEach(function (e) {
        var btn = n === "mgmt" ? "" : "<button data-action=" + (n === "deny" ? "unblock" : "unallow") + " data-key=\"" + esc(e.prefix) + "\">Remove</button>";
        rows.push("<tr><td>" + esc(e.prefix) + "</td><td><span class=\"tag " + n + "\">" + n + "</span></td><td>" + e.from + "</td><td>" + (e.until ? esc(new Date(e.until).toLocaleTimeString()) : "") + "</td><td>" + btn + "</td></tr>");
      });
    });
    $("lists-table").tBodies[0].innerHTML = rows.join("") || "<tr><td colspan=5 class=muted>the lists are empty</td></tr>";
  }

  // ------------------------------------------------------------------------------------------
  // Events: server-sent events read with fetch, so that the request carries the token

  function startEvents() {
    if (S.evAbort) S.evAbort.abort();
    S.events = [];
    renderEvents();
    if (!S.place || (S.place.info && !S.place.info.protected)) return;
    var ctl = new AbortController();
    S.evAbort = ctl;
    var key = placeQuery();
    var headers = { accept: "text/event-stream" };
    if (S.token) headers.authorization = "Bearer " + S.token;
    $("events-state").textContent = "connecting";
    fetch("/v1/events?" + key, { headers: headers, signal: ctl.signal, cache: "no-store" }).then(function (r) {
      if (!r.ok || !r.body) throw new Error("GET /v1/events: HTTP " + r.status);
      $("events-state").textContent = "live";
      var reader = r.body.getReader(), dec = new TextDecoder(), buf = "";
      var pump = function () {
        return reader.read().then(function (x) {
          if (x.done) throw new Error("the stream ended");
          buf += dec.decode(x.value, { stream: true });
          var i;
          while ((i = buf.indexOf("\n\n")) >= 0) { onEvent(buf.slice(0, i)); buf = buf.slice(i + 2); }
          return pump();
        });
      };
      return pump();
    }).catch(function (e) {
      if (ctl.signal.aborted) return;
      $("events-state").textContent = "reconnecting (" + e.message + ")";
      setTimeout(function () { if (S.evAbort === ctl) startEvents(); }, 2000);
    });
  }

  var evDirty = false;
  function onEvent(block) {
    var type = "message", data = "";
    block.split("\n").forEach(function (l) {
      if (l.indexOf("event: ") === 0) type = l.slice(7);
      else if (l.indexOf("data: ") === 0) data += l.slice(6);
    });
    if (!data) return;
    var v = JSON.parse(data);
    if (type === "budget") { $("events-budget").textContent = v ? "not sampled since attach: " + fmt(v.suppressed) + " over the per-CPU budget, " + fmt(v.lost) + " lost" : ""; return; }
    S.events.unshift(v);
    if (S.events.length > 200) S.events.length = 200;
    evDirty = true;
  }

  function renderEvents() {
    var f = $("events-filter").value.trim();
    var rows = S.events.filter(function (e) { return !f || e.source.indexOf(f) === 0; }).slice(0, 100);
    $("events-table").tBodies[0].innerHTML = rows.map(function (e) {
      return "<tr><td>" + esc(new Date(e.time).toLocaleTimeString() + "." + String(new Date(e.time).getMilliseconds()).padStart(3, "0")) + "</td><td>" + esc(e.source) + "</td><td>" + esc(e.rule) + "</td><td>" + esc(e.reason) + "</td><td class=" + (e.verdict === "drop" ? "drop" : "pass") + ">" + esc(e.verdict) + "</td><td>" + esc(e.proto + (e.dport ? "/" + e.dport : "")) + "</td><td>" + fmt(e.bytes) + "</td></tr>";
    }).join("") || "<tr><td colspan=7 class=muted>no drop event since the page opened" + (f ? " from " + esc(f) : "") + "</td></tr>";
    evDirty = false;
  }
  $("events-filter").addEventListener("input", renderEvents);

  // ------------------------------------------------------------------------------------------
  // The loop: every second the rates and the history's new points; every two the top talkers and
  // the policy; every five the interfaces.

  function refresh(all) {
    if (S.authFailed) return Promise.resolve();
    var t = S.tick++;
    var first = !S.status;
    return (first || all || t % 5 === 0 ? loadStatus() : Promise.resolve()).then(function () {
      if (!S.place) { $("main").hidden = false; $("when").textContent = "no interface is configured"; return; }
      var q = placeQuery();
      var jobs = [
        api("GET", "/v1/stats?" + q).then(renderStats),
        api("GET", "/v1/history?" + q + (S.lastT !== undefined ? "&since=" + S.lastT : "")).then(function (h) { appendHistory(h); renderCharts(); }),
      ];
      if (all || first || Date.now() - S.topAt >= 2000) {
        S.topAt = Date.now();
        jobs.push(api("GET", "/v1/policy?" + q).then(function (p) { S.policy = p; renderPolicy(); }));
        jobs.push(api("GET", "/v1/top?" + q + "&n=100").then(function (tp) { S.top = tp.top || []; $("top-read").textContent = "read in " + tp.read_ms + " ms"; }));
      }
      return Promise.all(jobs).then(function () {
        renderTop();
        if (evDirty) renderEvents();
        $("main").hidden = false;
        $("when").textContent = "updated " + new Date().toLocaleTimeString();
        $("err").textContent = "";
      });
    }).catch(function (e) { if (!(e instanceof Unauthorized)) $("err").textContent = e.message; });
  }

  function loop() {
    if (!S.busy) {
      S.busy = true;
      refresh().then(function () { S.busy = false; }, function () { S.busy = false; });
    }
    setTimeout(loop, 1000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", loop); else loop();
})();
`;
