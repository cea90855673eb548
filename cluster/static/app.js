// popvae dashboard: plain JS, no build step, no CDN. Polls the status service's REST API and draws SVG charts.
"use strict";

const POLL_MS = 2000;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const state = { run: null, token: localStorage.getItem("popvae-token") || "", historyKey: null, history: [], pictures: "" };

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (v, d = 2) => {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const a = Math.abs(v);
  return a > 0 && a < 0.1 ? Number(v).toPrecision(2) : Number(v).toFixed(d);  // a small KL is not 0.00
};
const color = (member) => COLORS[(member - 1) % COLORS.length];

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, as = "json") {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) { $("#auth").hidden = false; throw new HttpError(401, "a bearer token is needed"); }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new HttpError(r.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return as === "json" ? r.json() : as === "text" ? r.text() : r.blob();
}

async function optional(path) {  // a 404 or 503 is a normal answer here (no population yet, a robust run, ...)
  try { return await api(path); } catch (e) { if (e.status === 404 || e.status === 503) return null; throw e; }
}

// ---------- runs list ----------
function renderRuns(runs) {
  const ul = $("#runs");
  if (!runs.length) { ul.innerHTML = '<li class="muted">no runs under the root yet</li>'; return; }
  ul.innerHTML = runs.map((r) => {
    const progress = r.epochs ? `${r.epoch}/${r.epochs}` : "";
    return `<li class="${r.run_id === state.run ? "selected" : ""}" data-run="${esc(r.run_id)}">
      <span class="run-id">${esc(r.run_id)}</span>
      <span class="badges"><span class="kind">${esc(r.kind || "?")}</span>
      ${r.state ? `<span class="state s-${esc(r.state)}">${esc(r.state)}</span>` : ""}
      ${r.live ? '<span class="live" title="its coordinator answers">live</span>' : ""}
      <span class="muted">${progress}</span></span></li>`;
  }).join("");
  ul.querySelectorAll("li[data-run]").forEach((li) => li.addEventListener("click", () => selectRun(li.dataset.run)));
}

function selectRun(run) {
  state.run = run; state.historyKey = null; state.history = []; state.pictures = "";
  history.replaceState(null, "", `#${encodeURIComponent(run)}`);
  $("#run").innerHTML = skeleton();
  tick();
}

function skeleton() {
  return `<section id="head"></section>
    <section id="members-box"><h3>Members</h3><div id="members"></div></section>
    <section class="charts"><div class="chart-box"><h3 id="tau-title">tau per member</h3><div id="tau-chart" class="chart"></div></div>
      <div class="chart-box"><h3 id="loss-title">loss per member</h3><div id="loss-chart" class="chart"></div></div>
      <div class="chart-box"><h3 id="curve-title">learning curve</h3><div id="curve-chart" class="chart"></div></div></section>
    <section id="lineage-box"><h3>Lineage <span class="muted">(newest first: who received whose weights)</span></h3><div id="lineage"></div></section>
    <section id="jobs-box"><h3>Jobs</h3><div id="jobs"></div></section>
    <section id="summary-box"><h3>Summary</h3><div id="summary"></div></section>
    <section id="pictures-box"><h3>Pictures</h3><div id="pictures"></div></section>
    <section id="reports-box"><h3>Reports</h3><div id="reports"></div></section>`;
}

// ---------- run header and members ----------
function renderHead(run, pop, overview) {
  const status = pop || (overview && overview.status);
  const kind = overview ? overview.kind : null;
  if (!status) {
    $("#head").innerHTML = `<h2>${esc(run)} <span class="kind">${esc(kind || "")}</span></h2>
      <p class="muted">No population in this run${kind === "robust" || kind === "evaluation" ? ` (a ${esc(kind)} run: see its jobs)` : " yet"}.</p>`;
    return;
  }
  const pct = status.epochs ? Math.round((100 * status.epoch) / status.epochs) : 0;
  const training = status.state === "running" && status.epoch < status.epochs;
  $("#head").innerHTML = `<h2>${esc(run)} <span class="kind">${esc(kind || "population")}</span>
      <span class="state s-${esc(status.state)}">${esc(status.state)}</span></h2>
    <div class="facts">
      <span><b>${status.epoch}</b> of ${status.epochs} epochs done${training ? ` &middot; training epoch ${status.epoch + 1}` : ""}</span>
      <span>best member <b>${status.best_member ? `#${status.best_member}` : "-"}</b></span>
      <span>last generation <b>${num(status.generation_seconds, 1)} s</b></span>
      <span>updated ${esc((status.updated_at || "").replace("T", " ").slice(0, 19))}</span>
      ${pop ? `<span class="muted" title="${esc(pop.note || "")}">${pop.source === "live" ? "live from the coordinator" : "from the run folder"}</span>` : ""}
    </div>
    <div class="bar" title="${pct}%"><div style="width:${pct}%"></div></div>`;
}

function renderMembers(status) {
  if (!status) { $("#members-box").hidden = true; return; }
  $("#members-box").hidden = false;
  const used = {};  // tau used in the last epoch done, from the history
  for (const r of state.history) if (r.epoch === status.epoch - 1) used[r.member] = r.tau;
  const rows = status.members.map((m) => {
    const best = m.index === status.best_member;
    const l = m.loss || {};
    return `<tr class="${best ? "best" : ""} m-${esc(m.state)}">
      <td><span class="swatch" style="background:${color(m.index)}"></span>${m.index}${best ? ' <span class="star" title="best member of the last epoch">&#9733;</span>' : ""}</td>
      <td>${esc(m.strategy)}</td>
      <td class="n">${num(used[m.index], 3)} &rarr; ${num(m.tau, 3)}</td>
      <td class="n">${num(l.total)}</td><td class="n">${num(l.reconstruction)}</td><td class="n">${num(l.kl_z1)}</td><td class="n">${num(l.kl_z2)}</td>
      <td class="n"><b>${num(m.val_loss)}</b></td><td class="n">${m.patience}</td>
      <td><span class="mstate">${esc(m.state)}</span></td>
      <td class="node" title="${esc(m.node_id || "")}">${esc((m.node_id || "-").slice(0, 8))}</td>
      <td>${m.flags.map((f) => `<span class="flag">${esc(f)}</span>`).join(" ")}</td></tr>`;
  }).join("");
  $("#members").innerHTML = `<table class="members"><thead><tr>
    <th>member</th><th>strategy</th><th title="tau used in the last epoch done -> tau for the next epoch">tau used &rarr; next</th>
    <th title="mean training loss per image: BCE summed over pixels + KL">train loss</th><th>recon (BCE)</th><th>KL z1</th><th>KL z2</th>
    <th title="loss on the held-out validation images, no Gumbel noise">val loss</th><th title="epochs in a row behind the best">patience</th>
    <th>state</th><th>node</th><th>flags</th></tr></thead><tbody>${rows}</tbody></table>`;
}

// ---------- charts (plain SVG) ----------
function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) { const pad = Math.abs(lo) * 0.05 || 0.5; lo -= pad; hi += pad; }
  const step0 = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= step0);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
  return { lo: Math.min(lo, ticks[0]), hi: Math.max(hi, ticks[ticks.length - 1]), ticks };
}

// names (optional): a label per series in place of "member m" (a series is the rows of one `member` value)
function lineChart(el, rows, column, ylabel, names = null) {
  const W = 520, H = 260, L = 58, R = 12, T = 10, B = 40;
  const pts = rows.filter((r) => r[column] !== null && Number.isFinite(r[column]));
  if (!pts.length) { el.innerHTML = '<p class="muted">no epoch done yet</p>'; return; }
  const epochs = pts.map((r) => r.epoch + 1), values = pts.map((r) => r[column]);
  const x0 = Math.min(...epochs), x1 = Math.max(Math.max(...epochs), x0 + 1);
  const yt = niceTicks(Math.min(...values), Math.max(...values));
  const sx = (e) => L + 10 + ((e - x0) / (x1 - x0)) * (W - L - R - 20), sy = (v) => T + (1 - (v - yt.lo) / (yt.hi - yt.lo)) * (H - T - B);
  const xstep = Math.max(1, Math.ceil((x1 - x0 + 1) / 10));
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(ylabel)}">`;
  for (const t of yt.ticks) svg += `<line class="grid" x1="${L}" x2="${W - R}" y1="${sy(t)}" y2="${sy(t)}"/><text class="tick" x="${L - 6}" y="${sy(t) + 4}" text-anchor="end">${+t.toPrecision(4)}</text>`;
  for (let e = x0; e <= x1; e += xstep) svg += `<text class="tick" x="${sx(e)}" y="${H - B + 16}" text-anchor="middle">${e}</text>`;
  svg += `<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/><line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/>`;
  svg += `<text class="label" x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">epoch</text>`;
  const members = [...new Set(pts.map((r) => r.member))].sort((a, b) => a - b);
  for (const m of members) {
    const mine = pts.filter((r) => r.member === m).sort((a, b) => a.epoch - b.epoch);
    const d = mine.map((r, i) => `${i ? "L" : "M"}${sx(r.epoch + 1).toFixed(1)},${sy(r[column]).toFixed(1)}`).join("");
    const name = names ? names[m] : `member ${m}`;
    svg += `<path class="line" d="${d}" stroke="${color(m)}"><title>${esc(name)}</title></path>`;
    for (const r of mine) {
      svg += `<circle cx="${sx(r.epoch + 1)}" cy="${sy(r[column])}" r="${r.is_best ? 6 : 2.5}" class="${r.is_best ? "best-point" : "pt"}" stroke="${color(m)}" fill="${r.is_best ? "none" : color(m)}"><title>${esc(name)}, epoch ${r.epoch + 1}: ${num(r[column], 4)}${r.is_best ? " (best)" : ""}</title></circle>`;
    }
  }
  svg += "</svg>";
  const legend = names ? members.map((m) => `<span><span class="swatch" style="background:${color(m)}"></span>${esc(names[m])}</span>`).join("")
    : members.map((m) => {
      const s = pts.find((r) => r.member === m).strategy;
      return `<span><span class="swatch" style="background:${color(m)}"></span>${m} ${esc(s)}</span>`;
    }).join("") + '<span><span class="ring"></span>best of the epoch</span>';
  el.innerHTML = svg + `<div class="legend">${legend}</div>`;
}

function renderCharts(cfg) {
  const sel = cfg && cfg.select_on === "train" ? "training" : "validation";
  $("#tau-title").textContent = "tau used in each epoch";
  $("#loss-title").textContent = `selection loss (${sel}: summed BCE per image + KL)`;
  lineChart($("#tau-chart"), state.history, "tau", "tau");
  lineChart($("#loss-chart"), state.history, "score", "loss");
  // the best member's reconstruction MSE on the run's fixed validation subset, from relaxed and from hard codes
  $("#curve-title").textContent = "learning curve: the best member's validation MSE";
  const curve = state.history.filter((r) => r.is_best).flatMap((r) => [
    { epoch: r.epoch, member: 1, mse: r.curve_mse }, { epoch: r.epoch, member: 2, mse: r.curve_mse_hard }]);
  lineChart($("#curve-chart"), curve, "mse", "MSE", { 1: "relaxed codes (at its tau)", 2: "hard codes (one-hot argmax)" });
}

async function loadHistory(run, epochDone) {
  const key = `${run}@${epochDone}`;
  if (state.historyKey === key) return;
  const rows = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await optional(`/population/history?run=${encodeURIComponent(run)}&limit=1000&offset=${offset}`);
    if (!page) break;
    rows.push(...page.rows);
    if (rows.length >= page.total || !page.rows.length) break;
  }
  state.history = rows; state.historyKey = key;
}

// ---------- lineage, jobs, summary, pictures, reports ----------
function renderLineage(lineage) {
  const gens = (lineage && lineage.generations) || [];
  $("#lineage-box").hidden = !gens.length;
  if (!gens.length) return;
  const rows = gens.slice(-12).reverse().map((g) => {
    const receivers = Object.keys(g.received).map(Number).sort((a, b) => a - b);
    const taus = Object.keys(g.tau_after).map((k) => `${k}: ${num(g.tau_before[k], 2)}&rarr;${num(g.tau_after[k], 2)}${g.feedback.includes(+k) ? "*" : ""}`).join(" &nbsp;");
    const events = Object.entries(g.events || {}).filter(([, e]) => e).map(([m, e]) => `<span class="flag">${esc(e)} #${esc(m)}</span>`).join(" ");
    return `<tr><td class="n">${g.epoch + 1}</td><td><span class="swatch" style="background:${color(g.best)}"></span>#${g.best}</td>
      <td class="n">${num(g.best_loss)}</td><td>#${g.best} &rarr; ${receivers.map((m) => `#${m}`).join(", ") || "-"}</td>
      <td class="taus">${taus}</td><td>${events}</td></tr>`;
  }).join("");
  $("#lineage").innerHTML = `<table class="lineage"><thead><tr><th>epoch</th><th>best</th><th>its loss</th><th>weights sent to</th>
    <th title="* : the feedback term moved it">tau before &rarr; after</th><th>events</th></tr></thead><tbody>${rows}</tbody></table>
    ${gens.length > 12 ? `<p class="muted">${gens.length - 12} older generations in /runs/${esc(state.run)}/lineage</p>` : ""}`;
}

function renderJobs(jobs) {
  const list = (jobs && jobs.jobs) || [];
  $("#jobs-box").hidden = !list.length;
  if (!list.length) return;
  $("#jobs").innerHTML = `<table><thead><tr><th>job</th><th>kind</th><th>method</th><th>state</th><th>epoch</th><th>updated</th><th>error</th></tr></thead><tbody>${
    list.map((j) => `<tr><td>${esc(j.id)}</td><td>${esc(j.kind)}</td><td>${esc(j.method || "")}</td>
      <td><span class="state s-${esc(j.state)}">${esc(j.state)}</span></td><td class="n">${j.epoch ?? "-"}/${j.epochs ?? "-"}</td>
      <td>${esc((j.updated_at || "").replace("T", " ").slice(0, 19))}</td><td class="err">${esc(j.error || "")}</td></tr>`).join("")
  }</tbody></table>`;
}

function renderSummary(overview) {
  const s = overview && overview.summary;
  $("#summary-box").hidden = !s;
  if (!s) return;
  const shown = { ...s };
  if (typeof shown.best_epoch === "number") shown.best_epoch += 1;  // summary.json counts from 0, people from 1
  $("#summary").innerHTML = `<dl class="summary">${Object.entries(shown).map(([k, v]) =>
    `<dt>${esc(k)}</dt><dd>${esc(typeof v === "number" ? +v.toPrecision(6) : Array.isArray(v) ? v.join(", ") || "-" : v)}</dd>`).join("")}</dl>`;
}

async function fileUrl(run, path) {  // fetched with the token, shown as a blob URL (an <img src> cannot send headers)
  return URL.createObjectURL(await api(`/runs/${encodeURIComponent(run)}/files/${path.split("/").map(encodeURIComponent).join("/")}`, "blob"));
}

async function renderPictures(run, overview) {
  const pics = (overview && overview.pictures) || [];
  const key = JSON.stringify(pics) + ((overview && overview.status && overview.status.updated_at) || "");
  $("#pictures-box").hidden = !pics.length;
  if (key === state.pictures) return;
  state.pictures = key;
  const figs = await Promise.all(pics.map(async (p) => `<figure><img alt="${esc(p.title)}" src="${await fileUrl(run, p.path)}">
      <figcaption><b>${esc(p.path)}</b>: ${esc(p.title)}</figcaption></figure>`));
  $("#pictures").innerHTML = figs.join("");
  const reports = (overview && overview.reports) || [];
  $("#reports-box").hidden = !reports.length;
  const texts = await Promise.all(reports.map(async (r) => `<details><summary>${esc(r)}</summary><pre>${esc(await api(`/runs/${encodeURIComponent(run)}/files/${r.split("/").map(encodeURIComponent).join("/")}`, "text"))}</pre></details>`));
  $("#reports").innerHTML = texts.join("");
}

// ---------- polling ----------
let busy = false;
async function tick() {
  if (busy) return;
  busy = true;
  try {
    const list = await api("/runs");
    if (!state.run && list.runs.length) {
      const wanted = decodeURIComponent(location.hash.slice(1));
      state.run = list.runs.some((r) => r.run_id === wanted) ? wanted : list.runs[0].run_id;
      $("#run").innerHTML = skeleton();
    }
    renderRuns(list.runs);
    const run = state.run;
    if (run) {
      const q = `run=${encodeURIComponent(run)}`;
      const [pop, overview, lineage, jobs] = await Promise.all([
        optional(`/population?${q}`), optional(`/runs/${encodeURIComponent(run)}/summary`),
        optional(`/runs/${encodeURIComponent(run)}/lineage`), optional(`/jobs?${q}`),
      ]);
      if (run !== state.run) return;
      const status = pop || (overview && overview.status);
      if (status) await loadHistory(run, status.epoch);
      renderHead(run, pop, overview);
      renderMembers(status);
      $(".charts").hidden = !status;
      if (status) renderCharts(overview && overview.config);
      renderLineage(lineage);
      renderJobs(jobs);
      renderSummary(overview);
      await renderPictures(run, overview);
    }
    $("#auth").hidden = true;
    $("#conn").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("#conn").className = "conn ok";
  } catch (e) {
    $("#conn").textContent = `service unreachable: ${e.message}`;
    $("#conn").className = "conn bad";
  } finally {
    busy = false;
  }
}

$("#auth-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("#auth-token").value.trim();
  localStorage.setItem("popvae-token", state.token);
  tick();
});
tick();
setInterval(tick, POLL_MS);
