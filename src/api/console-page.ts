/**
 * The page and the style of the operator's console (docs/console.md), served at GET / and
 * /assets/console.css. Static: no data and no secret in them; what the page shows it reads from the
 * API of the listener it is served by, with the token (src/api/console-script.ts).
 */
export const CONSOLE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice</title>
<link rel="stylesheet" href="/assets/uplot.min.css">
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/uplot.min.js" defer></script>
<script src="/assets/console.js" defer></script>
</head>
<body>
<header>
  <h1>Sluice</h1>
  <label>interface <select id="iface-select"></select></label>
  <span id="where" class="muted"></span>
  <span id="when" class="muted">connecting…</span>
  <span id="err" class="drop" role="alert"></span>
</header>
<form id="login" hidden autocomplete="on">
  <h2>This Sluice API needs its token</h2>
  <p class="muted">The content of the file named by <code>api.tcp.token_file</code>. It is kept in this tab only (session storage) and sent with each API request. A link may carry it in its fragment: <code>http://host:port/#token=…</code> (the fragment never reaches a server).</p>
  <input type="text" name="username" autocomplete="username" value="sluice" hidden>
  <label>token <input id="token-input" name="password" type="password" autocomplete="current-password" required minlength="1" size="48"></label>
  <button id="login-submit" type="submit">Sign in</button>
  <span id="login-error" class="drop"></span>
</form>
<main id="main" hidden>
  <section id="kpis" class="kpis" aria-label="now">
    <div class="kpi"><b id="kpi-allowed-pps" class="pass">–</b><small>passed packets/s</small></div>
    <div class="kpi"><b id="kpi-dropped-pps" class="drop">–</b><small>dropped packets/s</small></div>
    <div class="kpi"><b id="kpi-allowed-bps" class="pass">–</b><small>passed/s</small></div>
    <div class="kpi"><b id="kpi-dropped-bps" class="drop">–</b><small>dropped/s</small></div>
    <div class="kpi"><b id="kpi-drop-rate">–</b><small>dropped now (<span id="kpi-drop-total">–</span> since attach)</small></div>
    <div class="kpi"><b id="kpi-new-states">–</b><small>new states/s</small></div>
    <div class="kpi"><b id="kpi-entries">–</b><small>tracked of <span id="kpi-max">–</span></small></div>
    <div class="kpi"><b id="kpi-version">–</b><small>policy version</small></div>
  </section>
  <p id="rates-note" class="muted small"></p>
  <section class="charts">
    <div class="chart"><h3>Packets per second</h3><div id="chart-packets" data-points="0"></div></div>
    <div class="chart"><h3>Bytes per second</h3><div id="chart-bytes" data-points="0"></div></div>
    <div class="chart"><h3>Decisions by reason (packets/s, stacked; passes left out)</h3><div id="chart-reasons" data-points="0"></div></div>
    <div class="chart"><h3>New states per second and state-map fill</h3><div id="chart-states" data-points="0"></div></div>
    <div class="chart wide"><h3>Per rule (packets/s)</h3><div id="chart-rules" data-points="0"></div></div>
  </section>
  <div class="cols">
    <section>
      <h2>Limits of the default rule</h2>
      <p id="limits-now" class="muted"></p>
      <form id="limits-form" class="row">
        <label>rate <input id="limit-rate" size="10" placeholder="e.g. 500, 10k, 30/min"></label>
        <label>burst <input id="limit-burst" size="8" placeholder="e.g. 50"></label>
        <button id="limit-apply" type="submit">Set limits…</button>
      </form>
      <p class="muted small">PUT /v1/limits: one policy flip, kept until the config file changes the interface.</p>
      <h2>Policy</h2>
      <p id="policy-head" class="muted"></p>
      <div id="pending"></div>
      <table id="rules-table"><thead><tr><th>rule</th><th>mode</th><th>limit</th><th>passed</th><th>dropped</th><th>would drop</th><th>blocked</th><th></th></tr></thead><tbody></tbody></table>
      <p class="muted small">Read-only: the policy is edited in its file and with the CLI. The two switches here: a rule to dry-run and back, and confirm or roll back a pending apply.</p>
      <h2>Lists</h2>
      <table id="lists-table"><thead><tr><th>prefix</th><th>list</th><th>from</th><th>until</th><th></th></tr></thead><tbody></tbody></table>
    </section>
    <section>
      <h2>Top talkers</h2>
      <div class="row">
        <label>filter by prefix <input id="top-filter" size="18" placeholder="10.0.0.0/8 or 2001:db8:"></label>
        <label>block for <select id="block-for"><option>1m</option><option selected>5m</option><option>15m</option><option>1h</option><option>24h</option></select></label>
        <span id="top-read" class="muted small"></span>
      </div>
      <table id="top-table"><thead><tr>
        <th data-sort="key">source</th><th data-sort="rule">rule</th><th data-sort="usage">usage</th><th data-sort="available">available</th><th data-sort="pps" title="packets/s decided for the source (passed + dropped) between the last two readings of the state map; a–b: only bounds are known; ?: not known yet">packets/s</th>
        <th data-sort="dropped">dropped</th><th data-sort="idle_ms">idle</th><th data-sort="state">state</th><th>actions</th>
      </tr></thead><tbody></tbody></table>
    </section>
  </div>
  <section>
    <h2>Drop events <small class="muted">sampled, as they are decided: why was a source dropped</small></h2>
    <div class="row">
      <label>source <input id="events-filter" size="18" placeholder="an address or its start"></label>
      <span id="events-budget" class="muted small"></span>
      <span id="events-state" class="muted small"></span>
    </div>
    <div class="scroll"><table id="events-table"><thead><tr><th>time</th><th>source</th><th>rule</th><th>reason</th><th>verdict</th><th>protocol/port</th><th>bytes</th></tr></thead><tbody></tbody></table></div>
  </section>
</main>
<div id="notice" role="status" hidden></div>
<dialog id="confirm">
  <form method="dialog">
    <p id="confirm-text"></p>
    <div class="row"><button id="confirm-cancel" value="cancel">Cancel</button><button id="confirm-ok" value="ok" class="danger">Confirm</button></div>
  </form>
</dialog>
<footer>Per-client rate limiting at XDP. Charts: the daemon's history, one point a second (the last 15 minutes); rates are the API's. GeoIP tiers use IP geolocation by <a href="https://db-ip.com">DB-IP</a>, licensed under CC BY 4.0. Charts by <a href="https://github.com/leeoniya/uPlot">uPlot</a> (MIT).</footer>
</body>
</html>
`;

export const CONSOLE_CSS = `
:root { --fg: #1d2330; --muted: #6b7385; --line: #e3e6ee; --pass: #1f8a4c; --drop: #c0392b; --bg: #f7f8fb; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 10px 20px; background: #fff; border-bottom: 1px solid var(--line); display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; }
header h1 { margin: 0; font-size: 18px; }
main { padding: 12px 20px; display: grid; gap: 14px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; min-width: 0; }
h2 { margin: 4px 0 6px; font-size: 15px; }
h3 { margin: 0 0 4px; font-size: 13px; font-weight: 600; }
.muted { color: var(--muted); } .small { font-size: 12px; }
.kpis { display: flex; gap: 26px; flex-wrap: wrap; }
.kpi b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
.kpi small { color: var(--muted); }
.pass { color: var(--pass); } .drop { color: var(--drop); }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.chart { min-width: 0; } .chart.wide { grid-column: 1 / -1; }
.cols { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 14px; }
#rules-table td:nth-child(3), #top-table td:last-child { white-space: normal; }
.cols section { overflow-x: auto; }
@media (max-width: 1000px) { .cols, .charts { grid-template-columns: 1fr; } }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: right; padding: 3px 5px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 500; }
th[data-sort] { cursor: pointer; user-select: none; }
th.sorted::after { content: " ▾"; } th.sorted.asc::after { content: " ▴"; }
.row { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin: 4px 0 8px; }
button { font: inherit; padding: 2px 8px; border: 1px solid #c6cad6; border-radius: 5px; background: #fff; cursor: pointer; }
button:hover { background: #eef0f5; }
button.danger { border-color: var(--drop); color: var(--drop); }
.tag { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 12px; background: #eef0f5; }
.tag.blocked, .tag.deny { background: #fbe3e0; color: var(--drop); } .tag.allow { background: #e0f3e8; color: var(--pass); }
.tag.dry-run { background: #fff2d6; color: #8a5a00; }
#pending .box { border: 1px solid #e0b200; background: #fff8e1; padding: 8px 10px; border-radius: 6px; margin-bottom: 8px; }
#login { max-width: 640px; margin: 40px auto; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; display: grid; gap: 10px; }
#notice { position: fixed; right: 16px; bottom: 16px; padding: 8px 12px; border-radius: 6px; background: #1d2330; color: #fff; max-width: 520px; }
#notice[data-state="error"] { background: var(--drop); }
#events-table td { font-size: 12px; }
.scroll { max-height: 300px; overflow-y: auto; }
footer { padding: 6px 20px 20px; color: var(--muted); font-size: 12px; }
dialog { border: 1px solid var(--line); border-radius: 8px; max-width: 520px; }
`;
