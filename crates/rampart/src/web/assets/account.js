// Rampart pages: the account page. Every action is one call to the identity
// API with the session cookie and its CSRF token.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // Second factors ------------------------------------------------------
  async function loadMfa() {
    const res = await R.call("GET", "mfa");
    if (!res.ok) { $("mfa-status").textContent = R.why(res); return; }
    const s = res.data;
    if (s.totp) {
      $("mfa-status").textContent = "An authenticator app is on. Backup codes left: " + s.backup_codes_left + ".";
    } else {
      $("mfa-status").textContent = "Two-step login with an authenticator app is off.";
    }
    $("totp-on").hidden = !s.totp;
    $("totp-off").hidden = !!s.totp || !$("totp-enrol").hidden;
  }

  function showBackupCodes(codes) {
    const list = $("backup-code-list");
    list.replaceChildren(...codes.map((c) => R.el("li", c, { class: "code" })));
    $("backup-codes").hidden = false;
  }

  const start = $("totp-start");
  start.addEventListener("click", async () => {
    R.showError("totp-start-error", "");
    // The same proof as any change to how the account signs in (none but a
    // recent sign-in for an account without a password).
    const pw = $("totp-start-password");
    const res = await R.call("POST", "mfa/totp", pw && pw.value ? { password: pw.value } : undefined);
    if (!res.ok) { R.showError("totp-start-error", R.why(res)); return; }
    if (pw) pw.value = "";
    $("totp-qr").setAttribute("src", res.data.qr_png);
    $("totp-secret").textContent = res.data.secret;
    $("totp-off").hidden = true;
    $("totp-enrol").hidden = false;
    $("totp-code").focus();
  });

  R.onSubmit("totp-confirm-form", "totp-confirm-error", async (f) => {
    const res = await R.call("POST", "mfa/totp/confirm", { code: f.code.value.trim() });
    if (!res.ok) throw new Error(R.why(res));
    f.code.value = "";
    $("totp-enrol").hidden = true;
    showBackupCodes(res.data.backup_codes || []);
    await loadMfa();
  });

  // The password, or a code when its box is ticked: a password may look like
  // a code (16 letters), so the shape decides nothing.
  function proof(input, isCode) {
    return isCode.checked ? { code: input.value.trim() } : { password: input.value };
  }

  R.onSubmit("backup-form", "backup-error", async (f) => {
    const res = await R.call("POST", "mfa/backup-codes", proof(f.password, f.is_code));
    if (!res.ok) throw new Error(R.why(res));
    f.password.value = "";
    showBackupCodes(res.data.backup_codes || []);
    await loadMfa();
  });

  R.onSubmit("totp-disable-form", "totp-disable-error", async (f) => {
    const res = await R.call("POST", "mfa/totp/disable", proof(f.password, f.is_code));
    if (!res.ok) throw new Error(R.why(res));
    f.password.value = "";
    $("backup-codes").hidden = true;
    await loadMfa();
  });

  // Passkeys ------------------------------------------------------------
  async function loadPasskeys() {
    const list = $("passkey-list");
    if (!list) return;
    const res = await R.call("GET", "passkeys");
    if (!res.ok) { list.replaceChildren(R.el("li", R.why(res))); return; }
    const keys = res.data.passkeys || [];
    if (!keys.length) { list.replaceChildren(R.el("li", "No passkeys yet.")); return; }
    list.replaceChildren(...keys.map((k) => {
      const li = R.el("li", (k.name || "passkey") + " — added " + R.when(k.created_at) + ", last used " + R.when(k.last_used_at) + " ");
      li.appendChild(R.button("Remove", async () => {
        // Removing one takes the same proof as turning the app off (none
        // for an account with neither a password nor the app).
        const pw = $("passkey-password");
        const body = pw.value ? proof(pw, $("passkey-is-code")) : undefined;
        const r = await R.call("DELETE", "passkeys/" + encodeURIComponent(k.id), body);
        if (!r.ok) { R.showError("passkey-add-error", R.why(r)); return; }
        pw.value = "";
        await loadPasskeys();
      }, { "aria-label": "Remove passkey " + (k.name || "") }));
      return li;
    }));
  }

  R.onSubmit("passkey-add-form", "passkey-add-error", async (f) => {
    // Adding one takes the same proof as removing one.
    const pw = $("passkey-password");
    const s = await R.call("POST", "passkeys/register/start", pw.value ? proof(pw, $("passkey-is-code")) : undefined);
    if (!s.ok) throw new Error(R.why(s));
    const credential = await R.createCredential(s.data.publicKey);
    const body = { challenge_id: s.data.challenge_id, credential };
    if (f.name.value.trim()) body.name = f.name.value.trim();
    const fin = await R.call("POST", "passkeys/register/finish", body);
    if (!fin.ok) throw new Error(R.why(fin));
    f.name.value = "";
    pw.value = "";
    await loadPasskeys();
    await loadMfa();
  });

  // API keys ------------------------------------------------------------
  function showNewKey(key) {
    $("api-key-value").textContent = key;
    $("api-key-new").hidden = false;
  }

  async function loadKeys() {
    const tbody = $("api-key-table").querySelector("tbody");
    const res = await R.call("GET", "api-keys");
    if (!res.ok) { R.showError("api-key-error", R.why(res)); return; }
    const keys = (res.data.api_keys || res.data.keys || []).filter((k) => !k.revoked_at);
    tbody.replaceChildren(...keys.map((k) => {
      const actions = document.createElement("span");
      actions.appendChild(R.button("Rotate", async () => {
        // The same proof as making one (none but a recent sign-in for an
        // account with neither a password nor the app).
        const pw = $("api-key-password");
        const r = await R.call("POST", "api-keys/" + encodeURIComponent(k.id) + "/rotate",
          pw.value ? proof(pw, $("api-key-is-code")) : {});
        if (!r.ok) { R.showError("api-key-error", R.why(r)); return; }
        pw.value = "";
        showNewKey(r.data.key);
        await loadKeys();
      }, { "aria-label": "Rotate key " + k.name, "data-key-id": k.id, class: "rotate" }));
      actions.appendChild(R.button("Revoke", async () => {
        const r = await R.call("DELETE", "api-keys/" + encodeURIComponent(k.id));
        if (!r.ok) { R.showError("api-key-error", R.why(r)); return; }
        await loadKeys();
      }, { "aria-label": "Revoke key " + k.name, "data-key-id": k.id, class: "revoke danger" }));
      return R.row([k.name, k.prefix, (k.scopes || []).join(" ") || "—", R.when(k.created_at),
        R.when(k.expires_at), R.when(k.last_used_at), actions]);
    }));
    if (!keys.length) tbody.replaceChildren(R.row(["No keys.", "", "", "", "", "", ""]));
  }

  R.onSubmit("api-key-form", "api-key-error", async (f) => {
    const body = { name: f.name.value.trim() };
    const scopes = f.scopes.value.split(/[\s,]+/).filter(Boolean);
    if (scopes.length) body.scopes = scopes;
    if (f.expires_in.value.trim()) body.expires_in = f.expires_in.value.trim();
    if (f.password.value) Object.assign(body, proof(f.password, $("api-key-is-code")));
    const res = await R.call("POST", "api-keys", body);
    if (!res.ok) throw new Error(R.why(res));
    f.reset();
    showNewKey(res.data.key);
    await loadKeys();
  });

  // Sessions ------------------------------------------------------------
  async function loadSessions() {
    const tbody = $("session-table").querySelector("tbody");
    const res = await R.call("GET", "sessions");
    if (!res.ok) { R.showError("sessions-error", R.why(res)); return; }
    const list = res.data.sessions || [];
    tbody.replaceChildren(...list.map((s) => {
      const action = s.current
        ? R.el("span", "this session")
        : R.button("Sign out", async () => {
          const r = await R.call("DELETE", "sessions/" + encodeURIComponent(s.id));
          if (!r.ok) R.showError("sessions-error", R.why(r));
          await loadSessions();
        }, { "aria-label": "Sign out session " + s.id });
      return R.row([s.user_agent || "unknown device", s.ip, R.when(s.created_at), R.when(s.last_seen_at), action]);
    }));
  }

  $("sessions-revoke-others").addEventListener("click", async () => {
    R.showError("sessions-error", "");
    const r = await R.call("DELETE", "sessions?keep_current=true");
    if (!r.ok) R.showError("sessions-error", R.why(r));
    await loadSessions();
  });

  // Linked logins -------------------------------------------------------
  async function loadLinks() {
    const list = $("link-list");
    if (!list) return;
    const res = await R.call("GET", "oidc/links");
    if (!res.ok) { R.showError("links-error", R.why(res)); return; }
    const links = res.data.links || [];
    if (!links.length) { list.replaceChildren(R.el("li", "No linked logins.")); return; }
    list.replaceChildren(...links.map((l) => {
      const li = R.el("li", (l.display_name || l.provider) + (l.email ? " (" + l.email + ")" : "") + " ");
      li.appendChild(R.button("Unlink", async () => {
        const r = await R.call("DELETE", "oidc/links/" + encodeURIComponent(l.provider));
        if (!r.ok) R.showError("links-error", R.why(r));
        await loadLinks();
      }, { "aria-label": "Unlink " + (l.display_name || l.provider) }));
      return li;
    }));
  }

  for (const b of document.querySelectorAll("button.link-provider")) {
    b.addEventListener("click", async () => {
      R.showError("links-error", "");
      // Linking takes the same proof as adding a passkey (none for an
      // account with neither a password nor the app).
      const body = { return_to: R.ui + "/account" };
      const pw = $("link-password");
      if (pw.value) Object.assign(body, proof(pw, $("link-is-code")));
      const r = await R.call("POST", "oidc/" + encodeURIComponent(b.dataset.provider) + "/link", body);
      if (!r.ok) { R.showError("links-error", R.why(r)); return; }
      window.location.assign(r.data.authorize_url);
    });
  }

  // Password, data, deletion -------------------------------------------
  R.onSubmit("password-form", "password-error", async (f) => {
    const res = await R.call("POST", "password", {
      current_password: f.current_password.value, new_password: f.new_password.value,
    });
    if (!res.ok) throw new Error(R.why(res));
    // A new password ends every session, this one too.
    window.location.assign(R.ui + "/login");
  });

  R.onSubmit("delete-form", "delete-error", async (f) => {
    const res = await R.call("DELETE", "me", proof(f.password, f.is_code));
    if (!res.ok) throw new Error(R.why(res));
    window.location.assign(R.ui + "/login");
  });

  loadMfa();
  loadPasskeys();
  loadKeys();
  loadSessions();
  loadLinks();
})();
