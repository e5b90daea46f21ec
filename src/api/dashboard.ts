/**
 * The dashboard: one static page served at GET /, which reads the API (/v1/status, /v1/stats,
 * /v1/top) every two seconds and shows each protected interface: what it enforces, what passes and
 * what is dropped now, per rule, and the heaviest sources. The page holds no data and no secret, so
 * it is served without a token; on a TCP listener it asks for the token and sends it with every
 * API request (kept in the tab's sessionStorage only).
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice</title>
<style>
  :root { --fg: #1d2330; --muted: #6b7385; --line: #e3e6ee; --pass: #1f8a4c; --drop: #c0392b; --bg: #f7f8fb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { padding: 14px 24px; background: #fff; border-bottom: 1px solid var(--line); display: flex; gap: 16px; align-items: baseline; }
  header h1 { margin: 0; font-size: 18px; }
  header span { color: var(--muted); }
  main { padding: 16px 24px; display: grid; gap: 16px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; }
  h2 { margin: 0 0 4px; font-size: 16px; }
  .sub { color: var(--muted); margin-bottom: 10px; }
  .kpis { display: flex; gap: 28px; flex-wrap: wrap; margin: 8px 0 12px; }
  .kpi b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
  .kpi small { color: var(--muted); }
  .pass { color: var(--pass); } .drop { color: var(--drop); }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid var(--line); }
  th:first-child, td:first-child { text-align: left; }
  th { color: var(--muted); font-weight: 500; }
  .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
  @media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
  footer { padding: 8px 24px 24px; color: var(--muted); font-size: 12px; }
  #err { color: var(--drop); }
</style>
</head>
<body>
<header><h1>Sluice</h1><span id="when">connecting…</span><span id="err"></span></header>
<main id="ifaces"></main>
<footer>Per-client rate limiting at XDP. Counters are totals since the protection was attached; rates are over the last refresh.
GeoIP tiers use IP geolocation by <a href="https://db-ip.com">DB-IP</a>, licensed under CC BY 4.0.</footer>
<script>
"use strict";
const fmt = (n) => Math.round(n).toLocaleString("en-US");
const pps = (e) => e.pps != null ? fmt(e.pps) : e.pps_min != null && e.pps_max != null ? fmt(e.pps_min) + "-" + fmt(e.pps_max) : e.pps_min != null ? ">=" + fmt(e.pps_min) : "?";
const bytes = (n) => { const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0; while (n >= 1000 && i < 4) { n /= 1000; i++; } return n.toFixed(i ? 1 : 0) + " " + u[i]; };
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
let prev = new Map();
async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem("sluice-token");
  if (token) headers.authorization = "Bearer " + token;
  const r = await fetch(path, { headers });
  if (r.status === 401) {
    const t = prompt("This Sluice API needs its bearer token (the file named by api.tcp.token_file):");
    if (t) { sessionStorage.setItem("sluice-token", t.trim()); return api(path); }
  }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + ((await r.json().catch(() => ({}))).error?.message ?? ""));
  return r.json();
}
const per = (ms) => (ms === 3600000 ? "h" : ms === 60000 ? "min" : "s");
function limitText(l) {
  const parts = [];
  if (l.rate !== null) parts.push(fmt(l.rate) + " packets/" + per(l.rate_period_ms) + (l.burst ? " (burst " + fmt(l.burst) + ")" : ""));
  if (l.bytes_rate !== null) parts.push(bytes(l.bytes_rate) + "/" + per(l.bytes_period_ms) + (l.bytes_burst ? " (burst " + bytes(l.bytes_burst) + ")" : ""));
  return parts.join(" and ") + ", " + l.algorithm + ", per /" + l.key_v4 + " and /" + l.key_v6;
}
async function refresh() {
  const status = await api("/v1/status");
  const list = status.interfaces ?? [];
  const out = [];
  for (const st of list) {
    const id = (st.netns ?? "host") + "/" + st.iface;
    const q = "iface=" + encodeURIComponent(st.iface) + (st.netns ? "&netns=" + encodeURIComponent(st.netns) : "");
    const [s, top] = await Promise.all([api("/v1/stats?" + q), api("/v1/top?" + q + "&n=10").catch(() => ({ top: [] }))]);
    const now = Date.now();
    const p = prev.get(id);
    const dt = p ? (now - p.at) / 1000 : 0;
    const rate = (k) => (p && dt > 0 ? Math.max(0, (s[k] - p.s[k]) / dt) : 0);
    prev.set(id, { at: now, s });
    const total = s.allowed_packets + s.dropped_packets;
    const rules = (s.rules ?? []).map((r) => "<tr><td>" + esc(r.id + " " + (r.name ?? "")) + "</td><td class=pass>" + fmt(r.allowed_packets) + "</td><td class=drop>" + fmt(r.dropped_packets) + "</td><td>" + fmt(r.new_states) + "</td></tr>").join("");
    const before = Object.entries((s.global ?? {}).reasons ?? {}).map(([k, v]) => esc(k) + " " + fmt(v.packets)).join(" · ");
    const srcs = (top.top ?? []).map((e) => "<tr><td>" + esc(e.key) + "</td><td>" + e.rule + "</td><td>" + (e.usage * 100).toFixed(0) + "%</td><td class=drop>" + fmt(e.dropped) + "</td><td>" + (e.idle_ms / 1000).toFixed(1) + " s</td><td>" + pps(e) + "</td></tr>").join("");
    out.push("<section><h2>" + esc(st.iface) + (st.netns ? " <small>(netns " + esc(st.netns) + ")</small>" : "") + "</h2>" +
      "<div class=sub>" + esc(st.mode ?? "") + " XDP, program " + esc(st.program_id ?? "?") + " · " + esc(st.limits ? limitText(st.limits) : "") + "</div>" +
      "<div class=kpis>" +
      "<div class=kpi><b class=pass>" + fmt(rate("allowed_packets")) + "</b><small>passed/s</small></div>" +
      "<div class=kpi><b class=drop>" + fmt(rate("dropped_packets")) + "</b><small>dropped/s</small></div>" +
      "<div class=kpi><b>" + fmt(s.allowed_packets) + "</b><small>passed (" + bytes(s.allowed_bytes) + ")</small></div>" +
      "<div class=kpi><b>" + fmt(s.dropped_packets) + "</b><small>dropped (" + bytes(s.dropped_bytes) + ")</small></div>" +
      "<div class=kpi><b>" + (total ? (100 * s.dropped_packets / total).toFixed(1) : "0.0") + "%</b><small>drop rate</small></div>" +
      "<div class=kpi><b>" + fmt(st.state_entries ?? 0) + "</b><small>tracked of " + fmt(st.state_max_entries ?? 0) + "</small></div>" +
      "</div>" + (before ? "<div class=sub>decided before any rule: " + before + "</div>" : "") +
      "<div class=cols><div><table><tr><th>rule</th><th>passed</th><th>dropped</th><th>new states</th></tr>" + rules + "</table></div>" +
      "<div><table><tr><th>heaviest sources</th><th>rule</th><th>usage</th><th>dropped</th><th>idle</th><th title='packets/s decided for the key since the previous refresh (passed + dropped); a-b: only bounds are known; ?: not known yet'>pps</th></tr>" + srcs + "</table></div></div></section>");
  }
  document.getElementById("ifaces").innerHTML = out.join("") || "<section>No interface is protected.</section>";
  document.getElementById("when").textContent = "updated " + new Date().toLocaleTimeString();
  document.getElementById("err").textContent = "";
}
async function loop() {
  try { await refresh(); } catch (e) { document.getElementById("err").textContent = e.message; }
  setTimeout(loop, 2000);
}
loop();
</script>
</body>
</html>
`;
