// Rampart pages: the admin dashboard, over the admin API ({auth}/admin/...).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  // Live statistics -----------------------------------------------------
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }

  // Requests per second over the series' span, as a polyline with a
  // labelled maximum. Drawn with attributes only (no style, CSP-safe).
  function drawChart(series) {
    const chart = $("rps-chart");
    const W = 600, H = 160, PAD = 24;
    const points = series || [];
    const max = Math.max(1, ...points.map((p) => p.rps || 0));
    const t0 = points.length ? points[0].t : 0;
    const t1 = points.length ? points[points.length - 1].t : 1;
    const span = Math.max(1, t1 - t0);
    const xy = points.map((p) => {
      const x = PAD + ((p.t - t0) / span) * (W - 2 * PAD);
      const y = H - PAD - ((p.rps || 0) / max) * (H - 2 * PAD);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const children = [
      svg("line", { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, class: "axis" }),
      svg("line", { x1: PAD, y1: PAD, x2: PAD, y2: H - PAD, class: "axis" }),
      svg("polyline", { points: xy.join(" "), class: "series", fill: "none" }),
    ];
    const top = svg("text", { x: PAD + 4, y: PAD - 6, class: "label" });
    top.textContent = max.toFixed(1) + " req/s";
    const bottom = svg("text", { x: W - PAD, y: H - 6, class: "label", "text-anchor": "end" });
    bottom.textContent = "last " + Math.round(span / 1000) + " s";
    children.push(top, bottom);
    chart.replaceChildren(...children);
  }

  async function loadStats() {
    const res = await R.poll("admin/stats");
    if (!res.ok) { R.showError("stats-error", R.why(res)); return; }
    R.showError("stats-error", "");
    const s = res.data;
    $("stats-now").textContent = Number(s.requests_per_second || 0).toFixed(1) + " requests/s now, "
      + (s.requests_total || 0) + " in total, " + (s.in_flight || 0) + " in flight"
      + ((s.degraded || []).length ? "; degraded: " + s.degraded.join(", ") : ".");
    drawChart(s.series);
    $("rejection-table").querySelector("tbody").replaceChildren(
      ...(s.rejections || []).map((r) => R.row([r.layer, r.reason, r.count])));
    $("talker-table").querySelector("tbody").replaceChildren(
      ...(s.top_talkers || []).map((t) => R.row([target(t), t.requests !== undefined ? t.requests : t.count])));
    $("upstream-table").querySelector("tbody").replaceChildren(
      ...(s.upstreams || []).map((u) => R.row([u.upstream, u.target, u.healthy ? "healthy" : "unhealthy"])));
  }

  // Users ---------------------------------------------------------------
  let lastSearch = "";

  function userAction(label, method, path, body, user) {
    return R.button(label, async () => {
      R.showError("users-error", "");
      const r = await R.call(method, "admin/users/" + encodeURIComponent(user.id) + path, body);
      if (!r.ok) { R.showError("users-error", R.why(r)); return; }
      await loadUsers(lastSearch);
    }, { "aria-label": label + " " + user.username });
  }

  function rolesEditor(user) {
    const form = document.createElement("form");
    form.className = "inline";
    const id = "roles-" + user.id;
    form.appendChild(R.el("label", "Roles of " + user.username, { for: id, class: "visually-hidden" }));
    const input = R.el("input", null, { id, type: "text", value: (user.roles || []).join(" ") });
    form.appendChild(input);
    form.appendChild(R.el("button", "Set roles", { type: "submit" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const roles = input.value.split(/[\s,]+/).filter(Boolean);
      const r = await R.call("PUT", "admin/users/" + encodeURIComponent(user.id) + "/roles", { roles });
      if (!r.ok) { R.showError("users-error", R.why(r)); return; }
      await loadUsers(lastSearch);
    });
    return form;
  }

  async function loadUsers(search) {
    lastSearch = search;
    const q = new URLSearchParams({ search, limit: "50" });
    const res = await R.call("GET", "admin/users?" + q.toString());
    if (!res.ok) { R.showError("users-error", R.why(res)); return; }
    const users = res.data.users || [];
    $("user-table").querySelector("tbody").replaceChildren(...users.map((u) => {
      const locked = u.locked_until && u.locked_until > Date.now();
      const state = u.disabled ? "disabled" : locked ? (u.locked_until > 8.64e15 ? "locked until unlocked" : "locked until " + R.when(u.locked_until)) : "active";
      const actions = document.createElement("div");
      actions.className = "actions";
      actions.appendChild(locked
        ? userAction("Unlock", "POST", "/unlock", {}, u)
        : userAction("Lock", "POST", "/lock", { for: "1h" }, u));
      actions.appendChild(userAction("Reset MFA", "POST", "/mfa/reset", undefined, u));
      actions.appendChild(userAction("Sign out everywhere", "DELETE", "/sessions", undefined, u));
      actions.appendChild(rolesEditor(u));
      return R.row([u.username, u.email, (u.roles || []).join(", ") || "—", state, actions]);
    }));
    if (!users.length) $("user-table").querySelector("tbody").replaceChildren(R.row(["No users found.", "", "", "", ""]));
  }

  R.onSubmit("user-search", "users-error", async (f) => loadUsers(f.search.value.trim()));

  // Bans ----------------------------------------------------------------
  // An address, or an IPv6 network (ip/prefix_len) for an IPv6 client.
  function target(x) { return x.prefix_len ? x.ip + "/" + x.prefix_len : x.ip; }

  async function loadBans() {
    const res = await R.call("GET", "admin/bans");
    if (!res.ok) { R.showError("ban-error", R.why(res)); return; }
    const bans = res.data.bans || [];
    $("ban-table").querySelector("tbody").replaceChildren(...bans.map((b) => R.row([
      target(b), b.reason, b.source, R.when(b.until_ms || b.expires_at),
      R.button("Remove", async () => {
        const r = await R.call("DELETE", "admin/bans/" + encodeURIComponent(b.ip));
        if (!r.ok) R.showError("ban-error", R.why(r));
        await loadBans();
      }, { "aria-label": "Remove ban of " + target(b) }),
    ])));
    if (!bans.length) $("ban-table").querySelector("tbody").replaceChildren(R.row(["No bans.", "", "", "", ""]));
  }

  R.onSubmit("ban-form", "ban-error", async (f) => {
    const body = { ip: f.ip.value.trim() };
    if (f.ttl.value.trim()) body.ttl = f.ttl.value.trim();
    if (f.reason.value.trim()) body.reason = f.reason.value.trim();
    const res = await R.call("POST", "admin/bans", body);
    if (!res.ok) throw new Error(R.why(res));
    f.reset();
    await loadBans();
  });

  // Audit log -----------------------------------------------------------
  async function loadAudit(kind, subject) {
    const q = new URLSearchParams({ limit: "100", since: "24h" });
    if (kind) q.set("kind", kind);
    if (subject) q.set("subject", subject);
    const res = await R.call("GET", "admin/audit?" + q.toString());
    if (!res.ok) { R.showError("audit-error", R.why(res)); return; }
    const records = res.data.records || [];
    $("audit-table").querySelector("tbody").replaceChildren(...records.map((a) => {
      const details = a.detail || {};
      return R.row([R.when(a.ts_ms), a.kind, a.subject, a.ip,
        typeof details === "string" ? details : JSON.stringify(details)]);
    }));
    if (!records.length) $("audit-table").querySelector("tbody").replaceChildren(R.row(["No records.", "", "", "", ""]));
  }

  R.onSubmit("audit-form", "audit-error", async (f) => loadAudit(f.kind.value.trim(), f.subject.value.trim()));

  loadStats();
  setInterval(loadStats, 2000);
  loadUsers("");
  loadBans();
  loadAudit("", "");
})();
