// The operator console of agent-host: one page, four tabs, every datum
// read from the agent's /v1 API with the token the operator typed in.
//
// The token lives in this tab's sessionStorage and travels only in an
// `Authorization: Bearer` header, never in a URL. Everything a plugin or the
// agent says is put on the page as text (textContent), never as markup.
'use strict';

const TOKEN_KEY = 'agent-host-token';
const PLUGINS_REFRESH_MS = 2000;
const HEALTH_REFRESH_MS = 5000;
const EVENTS_RECONNECT_MS = 3000;
const EVENTS_KEPT = 500;

/** The token in use; null when the API is open or nobody signed in. */
let token = null;
/** What /v1/whoami said of the token (or of the open API). */
let identity = null;
/** The shown page's name. */
let currentPage = null;
let pluginsTimer = null;
/** The plugin table's rows by plugin name, kept across refreshes. */
const pluginRows = new Map();
/** The event stream's abort controller while it runs. */
let eventsAbort = null;
let eventsReconnect = null;
let eventCount = 0;

const $ = (id) => document.getElementById(id);

/** An answer of the API that is not a success: its status and error text. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  return token ? { Authorization: 'Bearer ' + token } : {};
}

/** One API call; the parsed JSON answer, or an ApiError with the API's text. */
async function api(method, path, body) {
  const headers = authHeaders();
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, `${method} ${path}: cannot reach the agent (${error.message})`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!response.ok) {
    const said = json && typeof json.error === 'string' ? json.error : text || response.statusText;
    throw new ApiError(response.status, `${method} ${path}: ${response.status} ${said}`);
  }
  return json;
}

function showError(id, error) {
  const box = $(id);
  if (error) {
    box.textContent = error.message || String(error);
    box.hidden = false;
  } else {
    box.textContent = '';
    box.hidden = true;
  }
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

const DASH = '—';

function count(value) {
  return typeof value === 'number' ? String(value) : DASH;
}

function micros(value) {
  if (typeof value !== 'number') return DASH;
  if (value < 1000) return `${Math.round(value)} µs`;
  if (value < 1000000) return `${(value / 1000).toFixed(1)} ms`;
  return `${(value / 1000000).toFixed(2)} s`;
}

function bytes(value) {
  if (typeof value !== 'number') return DASH;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour12: false });
}

// ---- signing in -----------------------------------------------------------

/** Asks the agent who `candidate` is: the identity, or an ApiError. */
async function whoami(candidate) {
  const saved = token;
  token = candidate;
  try {
    return await api('GET', '/v1/whoami');
  } finally {
    token = saved;
  }
}

function describeIdentity(who) {
  if (who.open) {
    return 'open API: no [[api.tokens]] configured, anyone who reaches this address may use it';
  }
  return `signed in as token '${who.token}' (sender '${who.sender}'; roles ${who.roles.join(', ') || 'none'})`;
}

function enter(who, withToken) {
  token = withToken;
  identity = who;
  if (withToken) sessionStorage.setItem(TOKEN_KEY, withToken);
  $('login').hidden = true;
  $('app').hidden = false;
  $('identity').textContent = describeIdentity(who);
  $('identity').hidden = false;
  $('sign-out').hidden = Boolean(who.open);
  const wanted = location.hash.replace('#', '');
  showPage(['chat', 'plugins', 'events', 'cluster'].includes(wanted) ? wanted : 'chat');
}

function showLogin(message) {
  $('app').hidden = true;
  $('identity').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  showError('login-error', message ? new Error(message) : null);
  $('token').focus();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  identity = null;
  leavePage();
  currentPage = null;
  stopEvents();
  pluginRows.clear();
  for (const id of ['chat-log', 'plugins-rows', 'failed-loads', 'events-rows', 'cluster-rows']) {
    $(id).replaceChildren();
  }
  eventCount = 0;
  $('reload-outcome').hidden = true;
  $('token').value = '';
  showLogin(null);
}

async function signIn(event) {
  event.preventDefault();
  const candidate = $('token').value.trim();
  if (!candidate) return;
  $('login-button').disabled = true;
  try {
    const who = await whoami(candidate);
    $('token').value = '';
    enter(who, candidate);
  } catch (error) {
    const why = error.status === 401 ? 'The agent refused this token. ' : '';
    showLogin(why + error.message);
  } finally {
    $('login-button').disabled = false;
  }
}

// ---- health ---------------------------------------------------------------

async function refreshHealth() {
  const badge = $('health');
  try {
    const response = await fetch('/healthz', { cache: 'no-store' });
    const health = await response.json();
    const reasons = Array.isArray(health.reasons) ? health.reasons : [];
    badge.textContent = `health: ${health.status}` + (reasons.length ? ` (${reasons.length})` : '');
    badge.title = reasons.length ? reasons.join('\n') : `${health.plugins} plugin(s)`;
    badge.className = `badge health-${health.status}`;
  } catch (error) {
    badge.textContent = 'health: unreachable';
    badge.title = error.message;
    badge.className = 'badge health-draining';
  }
}

// ---- tabs -----------------------------------------------------------------

function leavePage() {
  if (pluginsTimer !== null) {
    clearInterval(pluginsTimer);
    pluginsTimer = null;
  }
}

function showPage(name) {
  leavePage();
  currentPage = name;
  for (const page of document.querySelectorAll('.page')) {
    page.hidden = page.id !== `page-${name}`;
  }
  for (const tab of document.querySelectorAll('.tab')) {
    const selected = tab.dataset.page === name;
    tab.classList.toggle('selected', selected);
    tab.setAttribute('aria-selected', String(selected));
  }
  history.replaceState(null, '', `#${name}`);
  if (name === 'chat') {
    $('chat-text').focus();
  } else if (name === 'plugins') {
    refreshPlugins();
    pluginsTimer = setInterval(() => {
      refreshPlugins();
      refreshHealth();
    }, PLUGINS_REFRESH_MS);
  } else if (name === 'events') {
    startEvents();
  } else if (name === 'cluster') {
    refreshCluster();
  }
}

// ---- chat -----------------------------------------------------------------

function timingsLine(timings) {
  if (!timings) return DASH;
  const phases = ['providers', 'validate', 'handler', 'evaluators', 'total'];
  return phases.map((phase) => `${phase} ${micros(timings[`${phase}_us`])}`).join(' · ');
}

function renderReply(reply) {
  const item = element('li', null, 'reply');
  item.append(element('div', reply.text, 'reply-text'));
  const action = reply.action ? `${reply.action.plugin}/${reply.action.action}` : 'no action';
  const meta = `action: ${action} · ${reply.ok ? 'ok' : 'not ok'} · id ${reply.id}` +
    (reply.host ? ` · host ${reply.host}` : '');
  item.append(element('div', meta, 'reply-action'));
  const evaluations = Array.isArray(reply.evaluations) ? reply.evaluations : [];
  if (evaluations.length) {
    const list = element('ul', null, 'reply-evaluations');
    for (const e of evaluations) {
      const score = typeof e.score === 'number' ? e.score.toFixed(2) : DASH;
      list.append(element('li', `${e.plugin}/${e.evaluator}: score ${score}, ${e.passed ? 'passed' : 'failed'}`));
    }
    item.append(element('div', 'evaluations', 'label'), list);
  }
  const errors = Array.isArray(reply.errors) ? reply.errors : [];
  if (errors.length) {
    const list = element('ul', null, 'reply-errors');
    for (const text of errors) list.append(element('li', text, 'error'));
    item.append(element('div', 'errors', 'label'), list);
  }
  item.append(element('div', timingsLine(reply.timings), 'reply-timings'));
  return item;
}

async function sendMessage(event) {
  event.preventDefault();
  const input = $('chat-text');
  const text = input.value;
  if (!text.trim()) return;
  const log = $('chat-log');
  const sender = identity && !identity.open ? identity.sender : 'you';
  log.append(element('li', `${sender}: ${text}`, 'mine'));
  input.value = '';
  $('chat-send').disabled = true;
  try {
    const reply = await api('POST', '/v1/messages', { text });
    log.append(renderReply(reply));
  } catch (error) {
    log.append(element('li', error.message, 'error'));
  } finally {
    $('chat-send').disabled = false;
    input.focus();
    log.lastElementChild.scrollIntoView({ block: 'nearest' });
  }
}

// ---- plugins --------------------------------------------------------------

const PLUGIN_COLUMNS = ['name', 'version', 'generation', 'file', 'placement', 'state', 'calls',
  'latency', 'timeouts', 'panics', 'crashes', 'memory'];

function placementText(plugin) {
  const worker = plugin.worker;
  if (worker) {
    const pid = worker.pid === null || worker.pid === undefined ? 'not running' : `PID ${worker.pid}`;
    const group = worker.group ? `, group ${worker.group}` : '';
    return `worker (${pid}${group})`;
  }
  return plugin.placement === 'process' ? 'worker (not started)' : 'in process';
}

/** The contract's state, or what the older fields say when it is absent. */
function stateOf(plugin) {
  const workerReason = plugin.worker && plugin.worker.quarantined;
  if (typeof plugin.state === 'string') {
    return { state: plugin.state, reason: plugin.state_reason || null };
  }
  if (plugin.quarantined === true) return { state: 'quarantined', reason: workerReason || null };
  if (plugin.started === false) return { state: 'lazy', reason: null };
  return { state: DASH, reason: null };
}

function pluginRow(name) {
  let row = pluginRows.get(name);
  if (row) return row;
  const tr = element('tr');
  tr.dataset.plugin = name;
  const cells = {};
  for (const column of PLUGIN_COLUMNS) {
    cells[column] = element('td', null, `col-${column}`);
    tr.append(cells[column]);
  }
  const button = element('button', 'Reload', 'reload');
  button.type = 'button';
  button.dataset.plugin = name;
  button.addEventListener('click', () => reloadPlugin(name, button));
  const last = element('td');
  last.append(button);
  tr.append(last);
  row = { tr, cells };
  pluginRows.set(name, row);
  return row;
}

function renderPlugins(listing) {
  const plugins = Array.isArray(listing.plugins) ? listing.plugins : [];
  const body = $('plugins-rows');
  const seen = new Set();
  for (const plugin of plugins) {
    seen.add(plugin.name);
    const { tr, cells } = pluginRow(plugin.name);
    const stats = plugin.stats || {};
    const { state, reason } = stateOf(plugin);
    cells.name.textContent = plugin.name;
    cells.version.textContent = plugin.version || DASH;
    cells.generation.textContent = count(plugin.generation);
    cells.file.textContent = plugin.file || DASH;
    cells.file.title = plugin.sha256 ? `sha256 ${plugin.sha256}` : '';
    cells.placement.textContent = placementText(plugin);
    // A reason that already opens with the state's word stands alone.
    const said = reason && reason.toLowerCase().startsWith(String(state).toLowerCase());
    cells.state.textContent = reason ? (said ? reason : `${state}: ${reason}`) : state;
    cells.state.className = `col-state state-${state === DASH ? 'unknown' : state}`;
    cells.calls.textContent = count(stats.calls);
    cells.latency.textContent = `${micros(stats.p50_us)} / ${micros(stats.p99_us)}`;
    cells.timeouts.textContent = count(stats.timeouts);
    cells.panics.textContent = count(stats.panics);
    cells.crashes.textContent = count(stats.crashes);
    cells.memory.textContent = bytes(plugin.memory_bytes);
    body.append(tr);
  }
  for (const [name, row] of pluginRows) {
    if (!seen.has(name)) {
      row.tr.remove();
      pluginRows.delete(name);
    }
  }
  const failed = $('failed-loads');
  failed.replaceChildren();
  if (!Array.isArray(listing.failed)) {
    failed.append(element('li', DASH, 'muted'));
  } else if (listing.failed.length === 0) {
    failed.append(element('li', 'none', 'muted'));
  } else {
    for (const f of listing.failed) {
      const who = f.plugin ? ` (plugin ${f.plugin})` : '';
      failed.append(element('li', `${f.file}${who}: ${f.reason}`, 'error'));
    }
  }
}

async function refreshPlugins() {
  try {
    const listing = await api('GET', '/v1/plugins');
    renderPlugins(listing);
    showError('plugins-error', null);
    $('plugins-updated').textContent = `updated ${clock(new Date())}`;
  } catch (error) {
    showError('plugins-error', error);
  }
}

function reloadOutcome(result) {
  if (result.unchanged) {
    return `${result.plugin}: the file is byte-identical to the serving build; ` +
      `generation ${result.generation} (${result.to_version}) serves on`;
  }
  let text = `${result.plugin} reloaded: ${result.from_version} → ${result.to_version}, ` +
    `generation ${result.generation}; ${result.state_bytes} bytes of state handed over; ` +
    `calls held ${micros(result.paused_us)}, reload took ${micros(result.total_us)}`;
  if (Array.isArray(result.retire_errors) && result.retire_errors.length) {
    text += `; retiring the old generation: ${result.retire_errors.join('; ')}`;
  }
  return text;
}

async function reloadPlugin(name, button) {
  const outcome = $('reload-outcome');
  const force = $('reload-force').checked ? '?force=true' : '';
  button.disabled = true;
  outcome.hidden = false;
  outcome.className = 'outcome';
  outcome.textContent = `reloading ${name}…`;
  try {
    const result = await api('POST', `/v1/plugins/${encodeURIComponent(name)}/reload${force}`);
    outcome.textContent = reloadOutcome(result);
    outcome.className = 'outcome ok';
  } catch (error) {
    outcome.textContent = `reload of ${name} refused: ${error.message}`;
    outcome.className = 'outcome error';
  } finally {
    button.disabled = false;
  }
  refreshPlugins();
}

// ---- events ---------------------------------------------------------------

function eventMatches(row) {
  const name = $('filter-name').value.trim().toLowerCase();
  const source = $('filter-source').value.trim().toLowerCase();
  return row.dataset.name.toLowerCase().includes(name) &&
    row.dataset.source.toLowerCase().includes(source);
}

function applyEventFilters() {
  for (const row of $('events-rows').children) row.hidden = !eventMatches(row);
}

function addEvent(name, data) {
  let parsed = null;
  try {
    parsed = JSON.parse(data);
  } catch (_) {
    parsed = null;
  }
  const source = parsed && typeof parsed.source === 'string' ? parsed.source : '';
  const payload = parsed && 'payload' in parsed ? JSON.stringify(parsed.payload) : data;
  const shownName = parsed && typeof parsed.name === 'string' ? parsed.name : name;
  const row = element('tr');
  row.dataset.name = shownName;
  row.dataset.source = source;
  row.append(element('td', clock(new Date())), element('td', shownName, 'event-name'),
    element('td', source, 'event-source'), element('td', payload, 'event-payload'));
  row.hidden = !eventMatches(row);
  const rows = $('events-rows');
  rows.prepend(row);
  while (rows.children.length > EVENTS_KEPT) rows.lastElementChild.remove();
  eventCount += 1;
  $('events-status').textContent = `live · ${eventCount} event(s) received`;
}

/** One SSE frame (the lines before a blank line): its event, if it has data. */
function handleFrame(frame) {
  let name = 'message';
  const data = [];
  for (const line of frame.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length) addEvent(name, data.join('\n'));
}

function stopEvents() {
  if (eventsReconnect !== null) {
    clearTimeout(eventsReconnect);
    eventsReconnect = null;
  }
  if (eventsAbort) {
    eventsAbort.abort();
    eventsAbort = null;
  }
  $('events-status').textContent = 'not connected';
}

/** Opens GET /v1/events with the token (EventSource cannot send headers) and
 * reads its frames until it ends; then tries again while signed in. */
async function startEvents() {
  if (eventsAbort) return;
  const controller = new AbortController();
  eventsAbort = controller;
  const status = $('events-status');
  status.textContent = 'connecting…';
  try {
    const response = await fetch('/v1/events', {
      headers: authHeaders(),
      cache: 'no-store',
      signal: controller.signal,
    });
    if (!response.ok) {
      const text = await response.text();
      let said = text;
      try {
        said = JSON.parse(text).error || text;
      } catch (_) {
        said = text;
      }
      throw new ApiError(response.status, `GET /v1/events: ${response.status} ${said}`);
    }
    showError('events-error', null);
    status.textContent = `live · ${eventCount} event(s) received`;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      // Line ends may be CRLF or CR; a CR at the very end may be half of one.
      const settled = buffer.endsWith('\r') ? buffer.length - 1 : buffer.length;
      buffer = buffer.slice(0, settled).replace(/\r\n?/g, '\n') + buffer.slice(settled);
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        handleFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    status.textContent = 'the agent ended the stream; reconnecting…';
  } catch (error) {
    if (controller.signal.aborted) return;
    showError('events-error', error);
    status.textContent = 'disconnected; retrying…';
    if (error.status === 401 || error.status === 403) {
      eventsAbort = null;
      status.textContent = 'not connected';
      return;
    }
  }
  if (eventsAbort === controller) {
    eventsAbort = null;
    eventsReconnect = setTimeout(() => {
      eventsReconnect = null;
      if (identity) startEvents();
    }, EVENTS_RECONNECT_MS);
  }
}

// ---- cluster --------------------------------------------------------------

async function refreshCluster() {
  const summary = $('cluster-summary');
  const table = $('cluster-table');
  const rows = $('cluster-rows');
  try {
    const cluster = await api('GET', '/v1/cluster');
    showError('cluster-error', null);
    const hosts = Array.isArray(cluster.hosts) ? cluster.hosts : [];
    const locks = (cluster.accepted_locks || []).map((h) => h.slice(0, 12)).join(', ') || 'none';
    summary.textContent = `agent '${cluster.agent}': ${hosts.length} host(s); accepted lock hashes: ${locks}`;
    rows.replaceChildren();
    for (const host of hosts) {
      const lock = `${(host.lock_hash || '').slice(0, 12)}${host.lock_accepted ? '' : ' (not accepted)'}`;
      const taking = host.taking_messages ? 'yes' : `no${host.not_taking_because ? `: ${host.not_taking_because}` : ''}`;
      const tr = element('tr');
      tr.append(element('td', host.host), element('td', host.alive ? 'yes' : 'no'),
        element('td', `${(host.heartbeat_age_ms / 1000).toFixed(1)} s`), element('td', lock),
        element('td', taking), element('td', count(host.in_flight)), element('td', count(host.handled)),
        element('td', (host.plugins || []).join(', ')), element('td', host.http_address || DASH));
      rows.append(tr);
    }
    table.hidden = false;
  } catch (error) {
    rows.replaceChildren();
    table.hidden = true;
    if (error.status === 404) {
      summary.textContent = 'This host is not in cluster mode.';
      showError('cluster-error', null);
    } else {
      summary.textContent = '';
      showError('cluster-error', error);
    }
  }
}

// ---- start ----------------------------------------------------------------

async function start() {
  $('login-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('chat-form').addEventListener('submit', sendMessage);
  for (const tab of document.querySelectorAll('.tab')) {
    tab.addEventListener('click', () => showPage(tab.dataset.page));
  }
  $('filter-name').addEventListener('input', applyEventFilters);
  $('filter-source').addEventListener('input', applyEventFilters);
  $('events-clear').addEventListener('click', () => {
    $('events-rows').replaceChildren();
  });
  $('cluster-refresh').addEventListener('click', refreshCluster);
  refreshHealth();
  setInterval(refreshHealth, HEALTH_REFRESH_MS);

  const saved = sessionStorage.getItem(TOKEN_KEY);
  try {
    enter(await whoami(saved), saved);
  } catch (error) {
    if (saved) sessionStorage.removeItem(TOKEN_KEY);
    showLogin(saved || error.status !== 401 ? error.message : null);
  }
}

start();
