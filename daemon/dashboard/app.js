// The operator dashboard of pororocad (docs/operations.md, "Dashboard"). Read only: it GETs the
// daemon's JSON routes every few seconds and draws them. Rates are not asked of the daemon: this
// page samples each transfer's byte counter (progress.bytes_sent_all_attempts) at every refresh and
// keeps the last minutes of samples in memory. Data goes into the page with textContent only.
'use strict';

const kIntervalMs = 2000;
const kWindowMs = 5 * 60 * 1000;  // the sparklines' span
const kTokenKey = 'pororoca.dashboard.token';
const kSvg = 'http://www.w3.org/2000/svg';

const history = new Map();  // transfer id -> [{t, bytes, rate}]; rate null on the first sample
const totalHistory = [];    // [{t, rate}]
let sampled = false;        // a sample was taken before: the next one has rates
let timer = null;
let lastSample = 0;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ''));
  return e;
}

function td(text, cls, title) {
  const attrs = {};
  if (cls) attrs.class = cls;
  if (title) attrs.title = title;
  return el('td', attrs, text);
}

function bytes(n) {
  if (!Number.isFinite(n) || n <= 0) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
}

function rate(bps) {
  if (!Number.isFinite(bps) || bps <= 0) return '0 B/s';
  return bytes(bps) + '/s';
}

function duration(s) {
  if (!Number.isFinite(s) || s < 0) return '-';
  s = Math.round(s);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

function when(ms) {
  if (!ms) return '-';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

// A long path shows its end (the file's name), the whole in its tooltip.
function pathCell(p) {
  const s = String(p ?? '');
  return td(s.length > 26 ? '\u2026' + s.slice(-25) : s, 'path', s);
}

function shortId(id) { return String(id || '').slice(0, 12); }

function idCell(id) {
  return el('td', {class: 'id', title: id, 'data-id': id}, shortId(id));
}

// The remote end of a transfer: the endpoint of its source or destination "ENDPOINT:/path".
function peerOf(t) {
  for (const side of [t.destination, t.source]) {
    const s = String(side || '');
    const colon = s.indexOf(':');
    if (colon > 0 && !s.startsWith('/')) return s.slice(0, colon);
  }
  return '?';
}

function fill(tbodyId, rows, emptyId) {
  $(tbodyId).replaceChildren(...rows);
  if (emptyId) $(emptyId).hidden = rows.length > 0;
}

// A small SVG line of `values` (the last minutes), scaled to its own maximum.
function sparkline(values, width, height) {
  const svg = document.createElementNS(kSvg, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const max = Math.max(1, ...values) * 1.25;  // headroom: a steady rate is a line, not the frame
  const n = Math.max(values.length, 2);
  const pts = values.map((v, i) => {
    const x = (width * i) / (n - 1);
    const y = height - 1 - ((height - 2) * v) / max;
    return x.toFixed(1) + ',' + y.toFixed(1);
  });
  if (pts.length >= 2) {
    const area = document.createElementNS(kSvg, 'polygon');
    const lastX = ((width * (values.length - 1)) / (n - 1)).toFixed(1);
    area.setAttribute('points', pts.join(' ') + ` ${lastX},${height} 0,${height}`);
    svg.append(area);
    const line = document.createElementNS(kSvg, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(line);
  }
  const title = document.createElementNS(kSvg, 'title');
  title.textContent = 'peak ' + rate(Math.max(0, ...values));
  svg.append(title);
  return svg;
}

function token() { return sessionStorage.getItem(kTokenKey); }

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function get(path) {
  const headers = {Accept: 'application/json'};
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  const r = await fetch(path, {headers, cache: 'no-store', credentials: 'omit'});
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const msg = body && body.error ? body.error.message : r.statusText;
    throw new HttpError(r.status, msg || ('HTTP ' + r.status));
  }
  return body;
}

// Each route on its own: one refused (accounting for a non-operator) or missing (staging) does not
// hide the others.
async function settle(path) {
  try { return {ok: true, value: await get(path)}; } catch (e) { return {ok: false, error: e}; }
}

function sample(transfers, now) {
  const seen = new Set();
  let total = 0;
  for (const t of transfers) {
    if (t.state !== 'running' && t.state !== 'retrying') continue;
    seen.add(t.id);
    const b = (t.progress && t.progress.bytes_sent_all_attempts) || 0;
    const h = history.get(t.id) || [];
    const prev = h[h.length - 1];
    // A transfer seen for the first time has no rate yet; one that started since the last sample
    // moved its bytes since then.
    const since = prev ? prev : sampled && t.state === 'running' ? {t: lastSample, bytes: 0} : null;
    const r = since && now > since.t ? Math.max(0, ((b - since.bytes) * 1000) / (now - since.t)) : null;
    h.push({t: now, bytes: b, rate: r});
    while (h.length && h[0].t < now - kWindowMs) h.shift();
    history.set(t.id, h);
    total += r || 0;
  }
  for (const id of [...history.keys()]) if (!seen.has(id)) history.delete(id);
  if (sampled) totalHistory.push({t: now, rate: total});
  sampled = true;
  lastSample = now;
  while (totalHistory.length && totalHistory[0].t < now - kWindowMs) totalHistory.shift();
  return total;
}

function currentRate(id) {
  const h = history.get(id);
  return h && h.length ? h[h.length - 1].rate : null;
}

// The rates of a history, without the first sample's (no rate yet).
function rates(h) { return h.filter((s) => s.rate !== null).map((s) => s.rate); }

function renderInflight(transfers, total) {
  const rows = [];
  for (const t of transfers) {
    if (t.state !== 'running' && t.state !== 'retrying') continue;
    const p = t.progress || {};
    const done = p.bytes_verified || p.bytes_done || 0;
    const frac = p.bytes_total > 0 ? Math.min(1, done / p.bytes_total) : 0;
    const bar = el('span', {class: 'bar'}, el('span'));
    bar.firstChild.style.width = (frac * 100).toFixed(1) + '%';
    const progress = el('td', {}, bar, `${bytes(done)} of ${bytes(p.bytes_total)}${p.walk_done ? '' : '+'}`);
    const r = currentRate(t.id);
    const h = history.get(t.id) || [];
    rows.push(el('tr', {'data-id': t.id, class: 'transfer'}, idCell(t.id), td(t.state, 'state-' + t.state),
                 td(t.direction), pathCell(t.source), pathCell(t.destination),
                 td(t.user || '-'), progress, td(r === null ? 'measuring' : rate(r), 'num rate'),
                 el('td', {}, sparkline(rates(h), 120, 22)),
                 td(t.transport || '-'), td(duration(t.elapsed_s), 'num')));
  }
  fill('inflight-rows', rows, 'inflight-empty');
  $('total-rate').textContent = totalHistory.length ? rate(total) : 'measuring';
  $('total-spark').replaceChildren(sparkline(totalHistory.map((s) => s.rate), 160, 22));
}

function renderQueue(transfers, jobs) {
  const queued = transfers.filter((t) => t.state === 'queued');
  // Highest priority (5) first, then the oldest: the order the queue takes them in, fair share aside.
  queued.sort((a, b) => (b.priority ?? 3) - (a.priority ?? 3) || a.created_ms - b.created_ms);
  const now = Date.now();
  fill('queue-rows', queued.map((t) => el('tr', {'data-id': t.id}, idCell(t.id), td(t.priority ?? '-', 'num'),
                                          pathCell(t.source), pathCell(t.destination),
                                          td(t.user || '-'), td(duration((now - t.created_ms) / 1000), 'num'))),
       'queue-empty');
  const open = (jobs || []).filter((j) => j.state === 'queued' || j.state === 'running');
  fill('jobs-rows', open.map((j) => {
    const p = j.progress || {};
    return el('tr', {'data-id': j.id}, idCell(j.id), td(j.state, 'state-' + j.state), td(j.priority ?? '-', 'num'),
              td(j.user || '-'), td(j.entries, 'num'), td(`${p.files_done || 0} of ${p.files_total || 0}`, 'num'),
              td(bytes(p.bytes_done), 'num'));
  }), 'jobs-empty');
}

function renderPeers(transfers) {
  const peers = new Map();
  for (const t of transfers) {
    const name = peerOf(t);
    const p = peers.get(name) || {running: 0, queued: 0, succeeded: 0, failed: 0, bytes: 0, rate: 0};
    if (t.state === 'running' || t.state === 'retrying') p.running++;
    else if (t.state === 'queued') p.queued++;
    else if (t.state === 'succeeded') p.succeeded++;
    else if (t.state === 'failed' || t.state === 'partial') p.failed++;
    p.bytes += (t.progress && t.progress.bytes_sent_all_attempts) || 0;
    p.rate += currentRate(t.id) || 0;
    peers.set(name, p);
  }
  const names = [...peers.keys()].sort();
  fill('peers-rows', names.map((n) => {
    const p = peers.get(n);
    return el('tr', {}, td(n), td(p.running, 'num'), td(p.queued, 'num'), td(p.succeeded, 'num'),
              td(p.failed, 'num'), td(bytes(p.bytes), 'num'), td(rate(p.rate), 'num'));
  }), 'peers-empty');
}

function renderAccounting(res) {
  if (!res.ok) {
    fill('accounting-rows', []);
    $('accounting-rows').parentElement.hidden = true;
    $('accounting-note').textContent = res.error.status === 403 ? 'operator only' : 'unavailable: ' + res.error.message;
    return;
  }
  const pairs = res.value.by_pair || [];
  $('accounting-rows').parentElement.hidden = pairs.length === 0;
  $('accounting-note').textContent = pairs.length ? '' : 'Nothing accounted yet.';
  fill('accounting-rows', pairs.map((p) => el('tr', {}, td(p.source), td(p.destination), td(bytes(p.bytes), 'num'),
                                              td(p.files, 'num'), td(p.transfers, 'num'))));
}

function renderFailures(transfers) {
  const failed = transfers.filter((t) => t.state === 'failed' || t.state === 'partial');
  failed.sort((a, b) => (b.finished_ms || 0) - (a.finished_ms || 0));
  fill('failures-rows', failed.slice(0, 20).map((t) => {
    let reason = t.error || '';
    const files = t.failures || [];
    if (files.length) reason += ` (${files.slice(0, 2).map((f) => f.path + ': ' + f.error).join('; ')}` +
                                (files.length > 2 ? `; ${files.length - 2} more` : '') + ')';
    return el('tr', {'data-id': t.id}, idCell(t.id), td(t.state, 'state-' + t.state), td(when(t.finished_ms)),
              td(peerOf(t)), td(t.error_code || '-'), td(reason, 'reason'));
  }), 'failures-empty');
}

function renderStaging(res) {
  if (!res.ok) {
    fill('staging-rows', []);
    $('staging-rows').parentElement.hidden = true;
    $('staging-note').textContent =
        res.error.status === 404 ? 'staging not configured' : 'unavailable: ' + res.error.message;
    return;
  }
  const s = res.value;
  $('staging-rows').parentElement.hidden = false;
  $('staging-note').textContent =
      `${s.dir}: ${bytes(s.used_bytes)} of ${bytes(s.quota_bytes)} used; evicts above ` +
      `${Math.round((s.high_watermark || 0) * 100)}% down to ${Math.round((s.low_watermark || 0) * 100)}%; ` +
      `${s.evictions || 0} evictions`;
  fill('staging-rows', (s.datasets || []).map((d) => el('tr', {'data-id': d.id}, idCell(d.id),
      pathCell(d.source), td(d.state, 'state-' + d.state, d.error || ''), td(bytes(d.bytes), 'num'),
      td(d.files, 'num'), td((d.leases || []).map((l) => l.lease).join(', ') || '-'), td(when(d.last_used_ms)))));
}

function renderFederation(fed, eps) {
  if (fed.ok) {
    const f = fed.value;
    $('self').textContent = f.self || '';
    $('federation-note').textContent = `federation ${f.federation}, manifest serial ${f.serial} issued ` +
                                       `${f.issued_at}, ${f.rules} policy rules, from ${f.source}`;
  } else {
    $('federation-note').textContent = 'unavailable: ' + fed.error.message;
  }
  const list = eps.ok ? eps.value.endpoints || [] : [];
  fill('endpoints-rows', list.map((e) => el('tr', {}, td(e.name + (eps.value.self === e.name ? ' (this one)' : '')),
                                            td(e.institution), td(e.address), td(e.status, 'status-' + e.status))));
}

function setStatus(text, bad) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('bad', !!bad);
}

async function refresh() {
  const [transfers, jobs, fed, eps, acct, staging] = await Promise.all(
      ['/v1/transfers', '/v1/jobs', '/v1/federation', '/v1/endpoints', '/v1/accounting', '/v1/staging'].map(settle));
  if (!transfers.ok) {
    const st = transfers.error.status;
    if (st === 401 || st === 403) {
      setStatus('not authorized: ' + transfers.error.message, true);
      stop();
      $('hint').hidden = false;
    } else {
      setStatus('cannot read the daemon: ' + transfers.error.message, true);
    }
    return;
  }
  const list = transfers.value.transfers || [];
  const total = sample(list, Date.now());
  renderInflight(list, total);
  renderQueue(list, jobs.ok ? jobs.value.jobs : []);
  renderPeers(list);
  renderAccounting(acct);
  renderFailures(list);
  renderStaging(staging);
  renderFederation(fed, eps);
  setStatus('updated ' + new Date().toLocaleTimeString());
}

function stop() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

function start() {
  stop();
  $('hint').hidden = true;
  refresh();
  timer = setInterval(refresh, kIntervalMs);
}

document.addEventListener('DOMContentLoaded', () => {
  $('interval').textContent = String(kIntervalMs / 1000);
  $('auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(kTokenKey, $('token').value.trim());
    $('token').value = '';
    start();
  });
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(kTokenKey);
    stop();
    setStatus('key forgotten');
    $('hint').hidden = false;
  });
  // Nothing is asked before the operator has given a key (or chosen none) in this tab.
  if (token() === null) {
    setStatus('waiting for an access key');
    $('hint').hidden = false;
  } else {
    start();
  }
});
