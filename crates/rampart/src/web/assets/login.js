// Rampart pages: log in (password, second step, passkey), register, forgot
// and reset password.
"use strict";

(() => {
  const MFA_GRANT = "urn:rampart:params:oauth:grant-type:mfa-otp";
  let mfaToken = null;

  function done() {
    window.location.assign(R.ui + "/account");
  }

  // A session login answered 403 mfa_required: show the second step.
  function secondStep(data) {
    mfaToken = data.mfa_token;
    document.getElementById("password-step").hidden = true;
    const passkeyStep = document.getElementById("passkey-step");
    if (passkeyStep) passkeyStep.hidden = true;
    const methods = data.mfa_methods || [];
    document.getElementById("mfa-form").hidden = !(methods.includes("totp") || methods.includes("backup_code"));
    document.getElementById("mfa-passkey-row").hidden = !methods.includes("webauthn");
    document.getElementById("mfa-step").hidden = false;
    const otp = document.getElementById("otp");
    if (!otp.closest("form").hidden) otp.focus();
    else document.getElementById("mfa-passkey").focus();
  }

  async function sessionLogin(form) {
    const res = await R.call("POST", "session", form);
    if (res.ok) return done();
    if (res.status === 403 && res.data && res.data.error === "mfa_required") return secondStep(res.data);
    throw new Error(R.why(res));
  }

  R.onSubmit("login-form", "login-error", async (f) => {
    await sessionLogin(new URLSearchParams({
      grant_type: "password",
      username: f.username.value,
      password: f.password.value,
    }));
  });

  R.onSubmit("mfa-form", "mfa-error", async (f) => {
    const res = await R.call("POST", "session", new URLSearchParams({
      grant_type: MFA_GRANT,
      mfa_token: mfaToken,
      otp: f.otp.value.trim(),
    }));
    if (res.ok) return done();
    f.otp.value = "";
    throw new Error(R.why(res));
  });

  const mfaPasskey = document.getElementById("mfa-passkey");
  if (mfaPasskey) {
    mfaPasskey.addEventListener("click", async () => {
      R.showError("mfa-error", "");
      try {
        const start = await R.call("POST", "mfa/webauthn/start", { mfa_token: mfaToken });
        if (!start.ok) throw new Error(R.why(start));
        const credential = await R.getAssertion(start.data.publicKey);
        const fin = await R.call("POST", "mfa/webauthn/finish", {
          mfa_token: mfaToken, challenge_id: start.data.challenge_id, credential, session: true,
        });
        if (!fin.ok) throw new Error(R.why(fin));
        done();
      } catch (e) {
        R.showError("mfa-error", e.message || String(e));
      }
    });
  }

  R.onSubmit("passkey-form", "passkey-error", async (f) => {
    const start = await R.call("POST", "passkeys/login/start", { username: f.username.value });
    if (!start.ok) throw new Error(R.why(start));
    const credential = await R.getAssertion(start.data.publicKey);
    const fin = await R.call("POST", "passkeys/login/finish", {
      challenge_id: start.data.challenge_id, credential, session: true,
    });
    if (!fin.ok) throw new Error(R.why(fin));
    done();
  });

  R.onSubmit("register-form", "register-error", async (f) => {
    const body = { username: f.username.value, password: f.password.value };
    if (f.email.value.trim()) body.email = f.email.value.trim();
    const res = await R.call("POST", "register", body);
    // A weak password's detail names the rules it broke.
    if (!res.ok) throw new Error(R.why(res));
    await sessionLogin(new URLSearchParams({ grant_type: "password", username: body.username, password: body.password }));
  });

  R.onSubmit("forgot-form", "forgot-error", async (f) => {
    const v = f.login.value.trim();
    const res = await R.call("POST", "password/forgot", v.includes("@") ? { email: v } : { username: v });
    if (!res.ok) throw new Error(R.why(res));
    f.hidden = true;
    document.getElementById("forgot-done").hidden = false;
  });

  R.onSubmit("reset-form", "reset-error", async (f) => {
    const res = await R.call("POST", "password/reset", { token: f.token.value, new_password: f.new_password.value });
    if (!res.ok) throw new Error(R.why(res));
    f.hidden = true;
    document.getElementById("reset-done").hidden = false;
  });
})();
