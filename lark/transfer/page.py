"""The web page ``lark-transferd`` serves at ``/``: the user's transfers, live.

One static document; its script asks the API with the user's token, which it takes from the address's
fragment (``/#token=...``, never sent to the server; ``&log=ID`` also opens a transfer's log) or a paste
field, and keeps in the tab's ``sessionStorage`` only. It polls ``GET /v1/transfers`` every 2 s and shows
state, bytes and rate; a transfer's "log" link shows its event log and the mover's output below the table.
"""

from __future__ import annotations

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Lark transfers</title>
<link rel="icon" href="data:,">
<style>
 body { font-family: "DejaVu Sans", sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.4em; margin: 0 0 .4em 0; }
 table { border-collapse: collapse; width: 100%; font-size: .9em; }
 th, td { border-bottom: 1px solid #ddd; padding: .35em .5em; text-align: left; vertical-align: top; }
 th { background: #f3f3f3; }
 td.num { text-align: right; font-variant-numeric: tabular-nums; }
 .state { font-weight: bold; padding: .1em .4em; border-radius: .3em; }
 .QUEUED { background: #e8e8e8; } .ACTIVE { background: #cfe3ff; } .INACTIVE { background: #ffe2a8; }
 .SUCCEEDED { background: #c9efc9; } .FAILED { background: #f7c4c4; } .CANCELED { background: #ddd; }
 #status { color: #666; font-size: .85em; margin: .4em 0; }
 pre { background: #f7f7f7; padding: .6em; max-height: 20em; overflow: auto; font-size: .8em; }
 .reason { color: #8a5a00; font-size: .85em; }
</style>
</head>
<body>
<h1>Lark transfers</h1>
<form id="login"><input name="username" autocomplete="username" hidden>
 <label>Token <input id="token" type="password" size="40" autocomplete="current-password"></label>
 <button>Show my transfers</button></form>
<div id="status">not signed in</div>
<table id="transfers">
 <thead><tr><th>id</th><th>verb</th><th>source</th><th>destination</th><th>state</th><th>bytes</th>
 <th>rate</th><th>site</th><th>started</th><th>ended</th><th></th></tr></thead>
 <tbody></tbody>
</table>
<div id="log"></div>
<script>
"use strict";
const store = window.sessionStorage;
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  store.setItem("larkToken", fragment.get("token")); history.replaceState(null, "", location.pathname); }
function token() { return store.getItem("larkToken"); }
document.getElementById("login").onsubmit = e => {
  e.preventDefault(); store.setItem("larkToken", document.getElementById("token").value.trim()); refresh(); };
function api(path) {
  return fetch(path, {headers: {"Authorization": "Bearer " + token()}}).then(async r => {
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.field + ": " + body.error.message : r.statusText);
    return body; });
}
function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function when(t) { return t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : ""; }
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }
function showLog(id) {
  api("/v1/transfers/" + id + "/log").then(log => {
    const box = document.getElementById("log"); box.textContent = "";
    const h = document.createElement("h2"); h.textContent = "Transfer " + id; box.appendChild(h);
    for (const key of ["event_log", "stdout", "stderr"]) {
      const p = document.createElement("h3"); p.textContent = key; box.appendChild(p);
      const pre = document.createElement("pre"); pre.textContent = log[key] || "(empty)"; box.appendChild(pre);
    } }).catch(err => { document.getElementById("status").textContent = err.message; });
}
function refresh() {
  if (!token()) return;
  api("/v1/transfers?limit=200").then(page => {
    document.getElementById("login").style.display = "none";
    const body = document.querySelector("#transfers tbody"); body.textContent = "";
    for (const t of page.transfers) {
      const row = body.insertRow(); row.id = "transfer-" + t.id;
      cell(row, t.id); cell(row, t.verb); cell(row, t.source); cell(row, t.destination);
      const st = cell(row, ""); const badge = document.createElement("span");
      badge.className = "state " + t.state; badge.textContent = t.state; st.appendChild(badge);
      if (t.reason) {
        const r = document.createElement("div"); r.className = "reason"; r.textContent = t.reason; st.appendChild(r); }
      cell(row, bytes(t.bytes), "num");
      cell(row, t.rate_mbit === null || t.rate_mbit === undefined ? "" : t.rate_mbit.toFixed(1) + " Mbit/s", "num");
      cell(row, t.site || ""); cell(row, when(t.started)); cell(row, when(t.ended));
      const link = document.createElement("a"); link.href = "#"; link.textContent = "log";
      link.onclick = e => { e.preventDefault(); showLog(t.id); }; row.insertCell().appendChild(link);
    }
    document.getElementById("status").textContent =
      page.count + " transfer(s), updated " + new Date().toISOString().slice(11, 19) + " UTC";
  }).catch(err => { document.getElementById("status").textContent = err.message; });
}
refresh();
if (fragment.get("log")) showLog(fragment.get("log"));
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
