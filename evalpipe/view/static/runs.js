// Keeps the runs table current without a reload: polls /api/runs and rebuilds the rows from text nodes
// (never markup built from run data).
"use strict";
(function () {
  const table = document.getElementById("runs");
  const body = table.tBodies[0];
  const every = Number(table.dataset.poll || "3") * 1000;

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function cell(row, content, numeric) {
    const td = row.insertCell();
    if (numeric) td.className = "num";
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    return td;
  }

  function number(value, digits) {
    if (value === null || value === undefined) return "—";
    return digits === undefined ? value.toLocaleString("en-US") : value.toFixed(digits);
  }

  function render(runs) {
    const rows = document.createDocumentFragment();
    for (const r of runs) {
      const tr = document.createElement("tr");
      const path = encodeURIComponent(r.job) + "/" + encodeURIComponent(r.run_id);
      tr.dataset.run = r.job + "/" + r.run_id;
      tr.className = "state-" + r.state;
      cell(tr, link("/jobs/" + encodeURIComponent(r.job) + "/history", r.job));
      const name = cell(tr, link("/runs/" + path, r.run_id));
      if (r.latest) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = "latest";
        name.append(" ", badge);
      }
      cell(tr, r.state);
      cell(tr, r.started_at ? r.started_at.slice(0, 19).replace("T", " ") : "—");
      cell(tr, number(r.rows), true);
      cell(tr, number(r.errors), true);
      cell(tr, number(r.cost_usd, 4), true);
      cell(tr, link("/runs/" + path + "/summary", "summary"));
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    document.getElementById("updated").textContent = "Last update " + new Date().toLocaleTimeString() + ".";
  }

  async function poll() {
    try {
      const response = await fetch("/api/runs", {cache: "no-store"});
      if (response.ok) render((await response.json()).runs);
    } catch (error) {
      // The server stopped (Ctrl-C): keep what is shown and try again later.
    }
    setTimeout(poll, every);
  }
  setTimeout(poll, every);
})();
