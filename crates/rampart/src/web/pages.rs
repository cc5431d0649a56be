//! The HTML of each page ([`maud`]: every `(value)` below is escaped).
//!
//! Every form that sends anything of the user's is `method="post"`: the
//! scripts submit them, but a form submitted natively before its script has
//! run (slow network, a blocked script) must not put a password in a URL. A
//! POST to a page is only its 405.
//!
//! Conventions the scripts rely on: a form's error goes to the
//! `p.error[role=alert]` inside it; sections a script fills start `hidden`;
//! ids are stable (the browser test uses them).

use maud::{html, Markup, DOCTYPE};

use super::assets::url;
use super::Site;
use crate::store::identity::User;

/// The pages, for routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Page {
    Login,
    Register,
    Forgot,
    Reset,
    Account,
    Admin,
}

/// The frame every page shares: head, skip link, navigation, `main`.
fn layout(site: &Site, heading: &str, user: Option<&User>, scripts: &[&str], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (heading) " · " (site.title) }
                link rel="stylesheet" href=(url(site.ui, "style.css"));
                script src=(url(site.ui, "common.js")) defer {}
                @for s in scripts {
                    script src=(url(site.ui, s)) defer {}
                }
            }
            body data-auth=(site.auth) data-ui=(site.ui) data-csrf-header=(site.csrf_header) data-csrf-cookie=(site.csrf_cookie) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { (site.title) }
                    nav aria-label="Main" {
                        @if let Some(u) = user {
                            a href={ (site.ui) "/account" } { "Account" }
                            @if super::is_admin(u) {
                                a href={ (site.ui) "/admin" } { "Admin" }
                            }
                            span.who { "Signed in as " strong #whoami { (u.username) } }
                            button #logout type="button" { "Log out" }
                        } @else {
                            a href={ (site.ui) "/login" } { "Log in" }
                            @if site.registration {
                                a href={ (site.ui) "/register" } { "Register" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (heading) }
                    (body)
                }
            }
        }
    }
}

/// The box that says the proof typed beside it is a code, not the password:
/// a password may look like a code (16 letters), so the page never guesses.
fn code_box(id: &str) -> Markup {
    html! {
        span.check {
            input #(id) name="is_code" type="checkbox";
            label for=(id) { "It is a code (from the authenticator app, or a backup code)" }
        }
    }
}

fn error_slot(id: &str) -> Markup {
    html! { p.error #(id) role="alert" aria-live="polite" {} }
}

pub(super) fn login(site: &Site, user: Option<&User>) -> Markup {
    let body = html! {
        @if let Some(u) = user {
            p.notice { "You are signed in as " strong { (u.username) } ". " a href={ (site.ui) "/account" } { "Go to your account" } "." }
        }
        section #password-step aria-labelledby="password-step-h" {
            h2 #password-step-h { "With your password" }
            form #login-form method="post" novalidate {
                label for="username" { "Username" }
                input #username name="username" type="text" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                button #login-submit type="submit" { "Log in" }
                (error_slot("login-error"))
            }
            p.links {
                @if site.reset { a href={ (site.ui) "/forgot" } { "Forgot your password?" } }
                @if site.registration { " " a href={ (site.ui) "/register" } { "Create an account" } }
            }
        }
        section #mfa-step hidden aria-labelledby="mfa-step-h" {
            h2 #mfa-step-h { "Second step" }
            form #mfa-form method="post" novalidate {
                label for="otp" { "Code from your authenticator app, or a backup code" }
                input #otp name="otp" type="text" inputmode="numeric" autocomplete="one-time-code" required;
                button #mfa-submit type="submit" { "Verify" }
                (error_slot("mfa-error"))
            }
            p #mfa-passkey-row hidden {
                button #mfa-passkey type="button" { "Use a passkey instead" }
            }
        }
        @if site.passkeys {
            section #passkey-step aria-labelledby="passkey-step-h" {
                h2 #passkey-step-h { "With a passkey" }
                form #passkey-form method="post" novalidate {
                    label for="passkey-username" { "Username" }
                    input #passkey-username name="username" type="text" autocomplete="username webauthn" required;
                    button #passkey-submit type="submit" { "Sign in with a passkey" }
                    (error_slot("passkey-error"))
                }
            }
        }
        @if !site.providers.is_empty() {
            section #providers aria-labelledby="providers-h" {
                h2 #providers-h { "With another account" }
                ul.providers {
                    @for (name, display) in &site.providers {
                        li {
                            a.button href={ (site.auth) "/oidc/" (name) "/login?return_to=" (site.ui) "/account" } {
                                "Continue with " (display)
                            }
                        }
                    }
                }
            }
        }
    };
    layout(site, "Log in", user, &["login.js"], body)
}

pub(super) fn register(site: &Site, user: Option<&User>) -> Markup {
    let body = html! {
        form #register-form method="post" novalidate {
            label for="reg-username" { "Username" }
            input #reg-username name="username" type="text" autocomplete="username" required;
            label for="reg-email" { "Email (optional)" }
            input #reg-email name="email" type="email" autocomplete="email";
            label for="reg-password" { "Password" }
            input #reg-password name="password" type="password" autocomplete="new-password" required aria-describedby="reg-password-hint";
            p.hint #reg-password-hint { "Use a long passphrase; common and breached passwords are refused." }
            button #register-submit type="submit" { "Create account" }
            (error_slot("register-error"))
        }
        p.links { "Already have an account? " a href={ (site.ui) "/login" } { "Log in" } }
    };
    layout(site, "Create an account", user, &["login.js"], body)
}

pub(super) fn forgot(site: &Site, user: Option<&User>) -> Markup {
    let body = html! {
        form #forgot-form method="post" novalidate {
            label for="forgot-login" { "Username or email" }
            input #forgot-login name="login" type="text" autocomplete="username" required;
            button #forgot-submit type="submit" { "Send reset link" }
            (error_slot("forgot-error"))
        }
        p.notice #forgot-done role="status" hidden {
            "If that account exists, a reset link is on its way."
        }
    };
    layout(site, "Reset your password", user, &["login.js"], body)
}

pub(super) fn reset(site: &Site, user: Option<&User>, token: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(token) = token {
            form #reset-form method="post" novalidate {
                input #reset-token type="hidden" name="token" value=(token);
                label for="reset-password" { "New password" }
                input #reset-password name="new_password" type="password" autocomplete="new-password" required;
                button #reset-submit type="submit" { "Set new password" }
                (error_slot("reset-error"))
            }
            p.notice #reset-done role="status" hidden {
                "Your password is changed. " a href={ (site.ui) "/login" } { "Log in" }
            }
        } @else {
            p.error role="alert" { "This page needs the link from the reset message." }
            p { a href={ (site.ui) "/forgot" } { "Ask for a new link" } }
        }
    };
    layout(site, "Choose a new password", user, &["login.js"], body)
}

pub(super) fn account(site: &Site, user: &User) -> Markup {
    let body = html! {
        section #profile aria-labelledby="profile-h" {
            h2 #profile-h { "Profile" }
            dl {
                dt { "Username" } dd #profile-username { (user.username) }
                dt { "Email" } dd #profile-email { (user.email.as_deref().unwrap_or("—")) }
                dt { "Roles" } dd #profile-roles { @if user.roles.is_empty() { "—" } @else { (user.roles.join(", ")) } }
                dt { "Account id" } dd { code { (user.id) } }
            }
        }
        section #mfa aria-labelledby="mfa-h" {
            h2 #mfa-h { "Two-step login" }
            p #mfa-status role="status" { "Loading…" }
            div #totp-off hidden {
                // An account without a password shows a recent sign-in instead.
                @if user.password_hash.is_some() {
                    label for="totp-start-password" { "Your password, to set up an authenticator app" }
                    input #totp-start-password type="password" autocomplete="current-password";
                }
                button #totp-start type="button" { "Set up an authenticator app" }
                (error_slot("totp-start-error"))
            }
            div #totp-enrol hidden {
                p { "Scan this code with your authenticator app:" }
                img #totp-qr alt="QR code of the authenticator secret" width="220" height="220";
                p { "Or type this secret: " code #totp-secret {} }
                form #totp-confirm-form method="post" novalidate {
                    label for="totp-code" { "The 6-digit code the app shows" }
                    input #totp-code name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required;
                    button #totp-confirm type="submit" { "Turn on" }
                    (error_slot("totp-confirm-error"))
                }
            }
            div #backup-codes hidden {
                p.notice { "Your backup codes. Each works once. Keep them somewhere safe: they are shown only now." }
                ol #backup-code-list {}
            }
            div #totp-on hidden {
                form #backup-form method="post" novalidate {
                    label for="backup-password" { "Password (or a code) to make new backup codes" }
                    input #backup-password name="password" type="password" autocomplete="current-password" required;
                    (code_box("backup-is-code"))
                    button type="submit" { "New backup codes" }
                    (error_slot("backup-error"))
                }
                form #totp-disable-form method="post" novalidate {
                    label for="totp-disable-password" { "Password (or a code) to turn the authenticator app off" }
                    input #totp-disable-password name="password" type="password" autocomplete="current-password" required;
                    (code_box("totp-disable-is-code"))
                    button type="submit" { "Turn off" }
                    (error_slot("totp-disable-error"))
                }
            }
        }
        @if site.passkeys {
            section #passkeys aria-labelledby="passkeys-h" {
                h2 #passkeys-h { "Passkeys" }
                div #passkey-proof.proof {
                    label for="passkey-password" { "Password (or a code) to add or remove a passkey" }
                    input #passkey-password type="password" autocomplete="current-password";
                    (code_box("passkey-is-code"))
                }
                ul #passkey-list {}
                form #passkey-add-form method="post" novalidate {
                    label for="passkey-name" { "Name of the new passkey" }
                    input #passkey-name name="name" type="text" maxlength="64" placeholder="Laptop";
                    button #passkey-add type="submit" { "Add a passkey" }
                    (error_slot("passkey-add-error"))
                }
            }
        }
        section #api-keys aria-labelledby="api-keys-h" {
            h2 #api-keys-h { "API keys" }
            table #api-key-table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Scopes" }
                    th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "Actions" } } }
                tbody {}
            }
            form #api-key-form method="post" novalidate {
                label for="api-key-name" { "Name" }
                input #api-key-name name="name" type="text" maxlength="64" required;
                label for="api-key-scopes" { "Scopes (space separated, optional)" }
                input #api-key-scopes name="scopes" type="text";
                label for="api-key-expires" { "Expires in (like 30d, optional)" }
                input #api-key-expires name="expires_in" type="text";
                label for="api-key-password" { "Password (or a code) to create or rotate a key" }
                input #api-key-password name="password" type="password" autocomplete="current-password";
                (code_box("api-key-is-code"))
                button #api-key-create type="submit" { "Create key" }
                (error_slot("api-key-error"))
            }
            div #api-key-new hidden role="status" {
                p.notice { "Your new key, shown only now:" }
                code #api-key-value {}
            }
        }
        section #sessions aria-labelledby="sessions-h" {
            h2 #sessions-h { "Sessions" }
            table #session-table {
                thead { tr { th scope="col" { "Device" } th scope="col" { "Address" } th scope="col" { "Signed in" }
                    th scope="col" { "Last seen" } th scope="col" { "Actions" } } }
                tbody {}
            }
            button #sessions-revoke-others type="button" { "Sign out all other sessions" }
            (error_slot("sessions-error"))
        }
        @if !site.providers.is_empty() {
            section #links aria-labelledby="links-h" {
                h2 #links-h { "Linked logins" }
                ul #link-list {}
                div #link-proof.proof {
                    label for="link-password" { "Password (or a code) to link a login" }
                    input #link-password type="password" autocomplete="current-password";
                    (code_box("link-is-code"))
                }
                p {
                    @for (name, display) in &site.providers {
                        button.link-provider type="button" data-provider=(name) { "Link " (display) } " "
                    }
                }
                (error_slot("links-error"))
            }
        }
        section #password-change aria-labelledby="password-h" {
            h2 #password-h { "Change password" }
            form #password-form method="post" novalidate {
                label for="current-password" { "Current password" }
                input #current-password name="current_password" type="password" autocomplete="current-password" required;
                label for="new-password" { "New password" }
                input #new-password name="new_password" type="password" autocomplete="new-password" required;
                button type="submit" { "Change password" }
                (error_slot("password-error"))
            }
        }
        section #data aria-labelledby="data-h" {
            h2 #data-h { "Your data" }
            p { a #export href={ (site.auth) "/me/export" } download="rampart-account.json" { "Download my data (JSON)" } }
            form #delete-form method="post" novalidate {
                label for="delete-password" { "To delete your account, type your password (or a code)" }
                input #delete-password name="password" type="password" autocomplete="current-password" required;
                (code_box("delete-is-code"))
                button.danger #delete-submit type="submit" { "Delete my account" }
                (error_slot("delete-error"))
            }
        }
    };
    layout(site, "Your account", Some(user), &["account.js"], body)
}

pub(super) fn admin(site: &Site, user: &User) -> Markup {
    let body = html! {
        section #stats aria-labelledby="stats-h" {
            h2 #stats-h { "Live traffic" }
            p #stats-now role="status" { "Loading…" }
            svg #rps-chart viewBox="0 0 600 160" width="600" height="160" role="img" aria-label="Requests per second over the last two minutes" {}
            div.grid {
                div { h3 { "Rejections" } table #rejection-table { thead { tr { th scope="col" { "Layer" } th scope="col" { "Reason" } th scope="col" { "Count" } } } tbody {} } }
                div { h3 { "Top talkers" } table #talker-table { thead { tr { th scope="col" { "Address" } th scope="col" { "Requests" } } } tbody {} } }
                div { h3 { "Upstreams" } table #upstream-table { thead { tr { th scope="col" { "Upstream" } th scope="col" { "Target" } th scope="col" { "Health" } } } tbody {} } }
            }
            (error_slot("stats-error"))
        }
        section #users aria-labelledby="users-h" {
            h2 #users-h { "Users" }
            form #user-search novalidate {
                label for="user-search-q" { "Search by name or email" }
                input #user-search-q name="search" type="search";
                button type="submit" { "Search" }
                (error_slot("users-error"))
            }
            table #user-table {
                thead { tr { th scope="col" { "Username" } th scope="col" { "Email" } th scope="col" { "Roles" } th scope="col" { "State" } th scope="col" { "Actions" } } }
                tbody {}
            }
        }
        section #bans aria-labelledby="bans-h" {
            h2 #bans-h { "Bans" }
            table #ban-table {
                thead { tr { th scope="col" { "Address" } th scope="col" { "Reason" } th scope="col" { "Source" } th scope="col" { "Expires" } th scope="col" { "Actions" } } }
                tbody {}
            }
            form #ban-form method="post" novalidate {
                label for="ban-ip" { "Address" }
                input #ban-ip name="ip" type="text" required placeholder="203.0.113.7";
                label for="ban-ttl" { "For (like 1h, optional)" }
                input #ban-ttl name="ttl" type="text";
                label for="ban-reason" { "Reason (optional)" }
                input #ban-reason name="reason" type="text" maxlength="200";
                button #ban-add type="submit" { "Ban" }
                (error_slot("ban-error"))
            }
        }
        section #audit aria-labelledby="audit-h" {
            h2 #audit-h { "Audit log" }
            form #audit-form novalidate {
                label for="audit-kind" { "Kind (like auth_failure)" }
                input #audit-kind name="kind" type="text";
                label for="audit-subject" { "Subject (user or key id)" }
                input #audit-subject name="subject" type="text";
                button type="submit" { "Show" }
                (error_slot("audit-error"))
            }
            table #audit-table {
                thead { tr { th scope="col" { "Time" } th scope="col" { "Kind" } th scope="col" { "Subject" } th scope="col" { "Address" } th scope="col" { "Details" } } }
                tbody {}
            }
        }
    };
    layout(site, "Administration", Some(user), &["admin.js"], body)
}

pub(super) fn forbidden(site: &Site, user: Option<&User>) -> Markup {
    let body = html! {
        p.error role="alert" { "This page is for administrators. Your account does not have the admin role." }
        p { a href={ (site.ui) "/account" } { "Back to your account" } }
    };
    layout(site, "Not allowed", user, &[], body)
}

pub(super) fn not_found(site: &Site) -> Markup {
    let body = html! {
        p { "There is no page here." }
        p { a href={ (site.ui) "/login" } { "Log in" } " · " a href={ (site.ui) "/account" } { "Your account" } }
    };
    layout(site, "Not found", None, &[], body)
}

pub(super) fn method_not_allowed(site: &Site) -> Markup {
    let body = html! { p { "Pages are read with GET; their actions call the API." } };
    layout(site, "Method not allowed", None, &[], body)
}
