// Rampart pages: what every page shares. No dependencies, no build step.
// Data comes from data- attributes on <body>; text reaches the page through
// textContent only, never as HTML.
"use strict";

const R = (() => {
  const body = document.body.dataset;
  const auth = body.auth;
  const ui = body.ui;
  const csrfHeader = body.csrfHeader || "x-csrf-token";
  const csrfCookie = body.csrfCookie || "__Host-rampart_csrf";
  let csrf = null;

  // The session's CSRF token: the one in hand, else the readable CSRF cookie
  // (set at login), else none (no session yet: login calls need none). A
  // refusal makes `call` fetch a fresh one once (the session may have been
  // given a new id, which a token is bound to).
  function cookieToken() {
    for (const part of document.cookie.split(";")) {
      const eq = part.indexOf("=");
      if (eq > 0 && part.slice(0, eq).trim() === csrfCookie) return decodeURIComponent(part.slice(eq + 1).trim());
    }
    return null;
  }

  async function csrfToken(fresh) {
    if (!fresh) {
      csrf = csrf || cookieToken();
      return csrf;
    }
    const r = await fetch(auth + "/csrf", { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) return null;
    csrf = (await r.json()).csrf_token;
    return csrf;
  }

  // One API call. `body`: an object (sent as JSON), a URLSearchParams (sent
  // as a form) or undefined. Unsafe methods carry the session's CSRF token.
  // Answers {ok, status, data}; data is the parsed JSON or null.
  // `background`: the page's own periodic request, which the server does not
  // count as activity (an open page left alone still times out).
  async function call(method, path, body, retried, background) {
    const headers = { accept: "application/json" };
    if (background) headers["x-rampart-background"] = "1";
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (body instanceof URLSearchParams) {
      init.body = body;
    } else if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (!["GET", "HEAD"].includes(method)) {
      const t = await csrfToken(false);
      if (t) headers[csrfHeader] = t;
    }
    const r = await fetch(path.startsWith("/") ? path : auth + "/" + path, init);
    let data = null;
    const type = r.headers.get("content-type") || "";
    if (type.includes("json")) {
      try { data = await r.json(); } catch (_) { data = null; }
    }
    // The session got a new token (a privilege change): fetch a new CSRF token once.
    if (r.status === 403 && data && String(data.type || "").endsWith("csrf") && !retried) {
      await csrfToken(true);
      return call(method, path, body, true, background);
    }
    return { ok: r.ok, status: r.status, data };
  }

  // The text to show for a refused call: the problem's detail, an OAuth
  // error's description, or the status.
  function why(res) {
    const d = res.data || {};
    if (d.detail) return d.detail;
    if (d.error_description) return d.error_description;
    if (d.title) return d.title;
    if (d.error) return d.error;
    return "request failed (" + res.status + ")";
  }

  function showError(id, text) {
    const el = document.getElementById(id);
    if (el) el.textContent = text || "";
  }

  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function button(text, onClick, attrs) {
    const b = el("button", text, Object.assign({ type: "button" }, attrs || {}));
    b.addEventListener("click", onClick);
    return b;
  }

  function when(ms) {
    if (!ms) return "—";
    // Past the end of Date's range (an indefinite lock is stored as 2^63-1 ms).
    if (!Number.isFinite(ms) || ms > 8.64e15) return "never";
    return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "—" : String(c);
      tr.appendChild(td);
    }
    return tr;
  }

  // Submit handler wrapper: no page reload, the button disabled while busy,
  // errors shown next to the form.
  function onSubmit(formId, errorId, handler) {
    const form = document.getElementById(formId);
    if (!form) return;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      showError(errorId, "");
      const submit = form.querySelector("button[type=submit]");
      if (submit) submit.disabled = true;
      try {
        await handler(form);
      } catch (e) {
        showError(errorId, e && e.message ? e.message : String(e));
      } finally {
        if (submit) submit.disabled = false;
      }
    });
  }

  // WebAuthn: the server's JSON (base64url strings) to the browser's
  // ArrayBuffers and back.
  function b64urlToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function bufToB64url(buf) {
    const bytes = new Uint8Array(buf);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(pk) {
    const o = Object.assign({}, pk);
    o.challenge = b64urlToBuf(pk.challenge);
    o.user = Object.assign({}, pk.user, { id: b64urlToBuf(pk.user.id) });
    if (pk.excludeCredentials) {
      o.excludeCredentials = pk.excludeCredentials.map((c) => Object.assign({}, c, { id: b64urlToBuf(c.id) }));
    }
    return o;
  }

  function requestOptions(pk) {
    const o = Object.assign({}, pk);
    o.challenge = b64urlToBuf(pk.challenge);
    if (pk.allowCredentials) {
      o.allowCredentials = pk.allowCredentials.map((c) => Object.assign({}, c, { id: b64urlToBuf(c.id) }));
    }
    return o;
  }

  function extensions(cred) {
    try { return cred.getClientExtensionResults() || {}; } catch (_) { return {}; }
  }

  function registrationJson(cred) {
    return {
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      extensions: extensions(cred),
      response: {
        attestationObject: bufToB64url(cred.response.attestationObject),
        clientDataJSON: bufToB64url(cred.response.clientDataJSON),
        transports: cred.response.getTransports ? cred.response.getTransports() : undefined,
      },
    };
  }

  function assertionJson(cred) {
    return {
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      extensions: extensions(cred),
      response: {
        authenticatorData: bufToB64url(cred.response.authenticatorData),
        clientDataJSON: bufToB64url(cred.response.clientDataJSON),
        signature: bufToB64url(cred.response.signature),
        userHandle: cred.response.userHandle ? bufToB64url(cred.response.userHandle) : null,
      },
    };
  }

  // Asks the browser for a passkey assertion for `publicKey` (server JSON).
  async function getAssertion(publicKey) {
    if (!window.PublicKeyCredential) throw new Error("this browser does not support passkeys");
    const cred = await navigator.credentials.get({ publicKey: requestOptions(publicKey) });
    if (!cred) throw new Error("no passkey was chosen");
    return assertionJson(cred);
  }

  async function createCredential(publicKey) {
    if (!window.PublicKeyCredential) throw new Error("this browser does not support passkeys");
    const cred = await navigator.credentials.create({ publicKey: creationOptions(publicKey) });
    if (!cred) throw new Error("no passkey was made");
    return registrationJson(cred);
  }

  async function logout() {
    await call("DELETE", "session");
    window.location.assign(ui + "/login");
  }

  document.addEventListener("DOMContentLoaded", () => {
    const out = document.getElementById("logout");
    if (out) out.addEventListener("click", logout);
  });

  const poll = (path) => call("GET", path, undefined, false, true);

  return { auth, ui, call, poll, why, showError, el, button, when, row, onSubmit, getAssertion, createCredential, csrfToken };
})();
