//! Second factors: TOTP codes (RFC 6238: HMAC-SHA-1, 6 digits, 30-second
//! steps, one step of skew either way) with replay protection, the
//! `otpauth://` URI authenticator apps read (Key URI format) and its QR code,
//! and the format of backup codes.
//!
//! Time is passed in (unix seconds), and so is the last step a code was used
//! for: a code is accepted only for a step later than that one, so that a
//! code seen once (over a shoulder, in a proxy log) cannot be used again.
//! Storing the accepted step atomically is the caller's job.
//!
//! ```
//! use rampart_core::totp::{code_at, verify, Check, STEP_SECS};
//!
//! let secret = b"12345678901234567890";
//! let now = 1_111_111_111;
//! let code = code_at(secret, now / STEP_SECS);
//! assert_eq!(code, "050471"); // RFC 6238, appendix B (last six digits)
//! let step = match verify(secret, &code, now, None) {
//!     Check::Accepted { step } => step,
//!     other => panic!("{other:?}"),
//! };
//! // The same code again is a replay.
//! assert_eq!(verify(secret, &code, now, Some(step)), Check::Replayed);
//! ```

use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, TOTP};

/// Digits of a code.
pub const DIGITS: usize = 6;
/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Steps accepted either side of the current one (clock drift, slow typing).
pub const SKEW_STEPS: u64 = 1;
/// Bytes of a generated secret: 160 bits, as RFC 4226 §4 recommends.
pub const SECRET_BYTES: usize = 20;
/// How many backup codes a user holds.
pub const BACKUP_CODES: usize = 10;
/// Random bytes in a backup code: 80 bits, written as 16 base32 characters.
pub const BACKUP_CODE_BYTES: usize = 10;

/// The outcome of checking a TOTP code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The code is right for `step`, which is later than the last used one.
    Accepted { step: u64 },
    /// The code is right, but only for a step already used: refused.
    Replayed,
    /// Six digits, but not a code of this secret now.
    Wrong,
    /// Not six digits at all.
    Malformed,
}

fn totp(secret: &[u8]) -> TOTP {
    // `new_unchecked`: the secret's length is ours to choose (SECRET_BYTES
    // when we make it; the RFC's test secret in tests).
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 0, STEP_SECS, secret.to_vec())
}

/// The code of `secret` for time step `step`.
pub fn code_at(secret: &[u8], step: u64) -> String {
    totp(secret).generate(step.saturating_mul(STEP_SECS))
}

/// The code as typed, without the spaces some apps show in the middle; `None`
/// unless exactly [`DIGITS`] ASCII digits remain.
pub fn normalize_code(input: &str) -> Option<String> {
    if input.len() > 16 {
        return None;
    }
    let code: String = input.chars().filter(|c| *c != ' ').collect();
    (code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// Checks `input` against the codes of the steps around `now` (unix seconds)
/// that are later than `last_used_step`. Every candidate is compared in
/// constant time, and all of them are compared.
pub fn verify(secret: &[u8], input: &str, now: u64, last_used_step: Option<u64>) -> Check {
    let Some(code) = normalize_code(input) else { return Check::Malformed };
    let totp = totp(secret);
    let current = now / STEP_SECS;
    let mut fresh = None;
    let mut replayed = false;
    for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
        let candidate = totp.generate(step.saturating_mul(STEP_SECS));
        if bool::from(candidate.as_bytes().ct_eq(code.as_bytes())) {
            if last_used_step.is_some_and(|last| step <= last) {
                replayed = true;
            } else if fresh.is_none() {
                fresh = Some(step);
            }
        }
    }
    match (fresh, replayed) {
        (Some(step), _) => Check::Accepted { step },
        (None, true) => Check::Replayed,
        (None, false) => Check::Wrong,
    }
}

/// The secret in base32 (RFC 4648, no padding), as apps take it typed in.
pub fn secret_base32(secret: &[u8]) -> String {
    totp_rs::Secret::Raw(secret.to_vec()).to_encoded().to_string()
}

/// The secret back from base32; `None` when it is not base32.
pub fn secret_from_base32(text: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::Encoded(text.to_owned()).to_bytes().ok()
}

/// The Key URI (`otpauth://totp/Issuer:account?secret=…&issuer=…`) that
/// authenticator apps read from the QR code. SHA-1, 6 digits and 30 s are the
/// format's defaults, so they are left out (as Google Authenticator expects).
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, URI_COMPONENT).to_string();
    let (issuer, account) = (enc(issuer), enc(account));
    format!("otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}", secret_base32(secret))
}

/// Everything but unreserved characters (RFC 3986 §2.3) is encoded: `:` and
/// `@` in an account name must not be read as the label separator.
const URI_COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The QR code of `uri` as a PNG `data:` URI, for an `<img src>`.
pub fn qr_png_data_uri(uri: &str) -> Result<String, String> {
    use base64::Engine as _;
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(qr_png(uri)?)))
}

/// Pixels per module of [`qr_png`].
const QR_SCALE: usize = 8;
/// Modules of white around the code: the quiet zone readers need.
const QR_QUIET: usize = 4;

/// The QR code of `uri` (error correction M) as a grayscale PNG: each module
/// an 8×8 square, black on white, inside a 4-module quiet zone.
pub fn qr_png(uri: &str) -> Result<Vec<u8>, String> {
    let code =
        qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M).map_err(|e| e.to_string())?;
    let modules = code.width();
    let side = (modules + 2 * QR_QUIET) * QR_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = ((i % modules + QR_QUIET) * QR_SCALE, (i / modules + QR_QUIET) * QR_SCALE);
            for row in pixels.chunks_exact_mut(side).skip(y).take(QR_SCALE) {
                if let Some(run) = row.get_mut(x..x + QR_SCALE) {
                    run.fill(0);
                }
            }
        }
    }
    let side = u32::try_from(side).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// The QR code of `uri` as an SVG document.
pub fn qr_svg(uri: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
}

/// A backup code written for people: 16 lower-case base32 characters in four
/// groups (`abcd-efgh-ijkl-mnop`), made from [`BACKUP_CODE_BYTES`] random bytes.
pub fn format_backup_code(random: &[u8; BACKUP_CODE_BYTES]) -> String {
    let text = totp_rs::Secret::Raw(random.to_vec()).to_encoded().to_string().to_ascii_lowercase();
    let mut out = String::with_capacity(19);
    for (i, c) in text.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// A backup code as typed, in the one form that is hashed: lower case,
/// without dashes and spaces. `None` when it cannot be a backup code.
pub fn normalize_backup_code(input: &str) -> Option<String> {
    if input.len() > 64 {
        return None;
    }
    let code: String = input.chars().filter(|c| *c != '-' && *c != ' ').map(|c| c.to_ascii_lowercase()).collect();
    (code.len() == 16 && code.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))).then_some(code)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 appendix B, SHA-1: time and the 8-digit code.
    const VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc6238_vectors_with_eight_digits() {
        for (time, code) in VECTORS {
            let totp = TOTP::new_unchecked(Algorithm::SHA1, 8, 0, 30, RFC_SECRET.to_vec());
            assert_eq!(totp.generate(time), code, "t = {time}");
        }
    }

    #[test]
    fn rfc6238_vectors_with_six_digits_verify() {
        for (time, code) in VECTORS {
            let six = &code[2..];
            assert_eq!(code_at(RFC_SECRET, time / STEP_SECS), six, "t = {time}");
            assert_eq!(verify(RFC_SECRET, six, time, None), Check::Accepted { step: time / STEP_SECS });
        }
    }

    #[track_caller]
    fn check(offset_steps: i64, last_used: Option<u64>, expected: Check) {
        let now = 1_700_000_015;
        let step = (now / STEP_SECS).checked_add_signed(offset_steps).unwrap();
        assert_eq!(verify(RFC_SECRET, &code_at(RFC_SECRET, step), now, last_used), expected);
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let current = 1_700_000_015 / STEP_SECS;
        check(0, None, Check::Accepted { step: current });
        check(-1, None, Check::Accepted { step: current - 1 });
        check(1, None, Check::Accepted { step: current + 1 });
        check(-2, None, Check::Wrong);
        check(2, None, Check::Wrong);
    }

    #[test]
    fn used_steps_are_replays() {
        let current = 1_700_000_015 / STEP_SECS;
        check(0, Some(current), Check::Replayed);
        check(-1, Some(current), Check::Replayed);
        check(1, Some(current), Check::Accepted { step: current + 1 });
        check(0, Some(current - 1), Check::Accepted { step: current });
    }

    #[test]
    fn malformed_codes_are_refused_before_any_hmac() {
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６", "123456\0", "-12345", &"1".repeat(1 << 20)]
        {
            assert_eq!(verify(RFC_SECRET, bad, 59, None), Check::Malformed, "{bad:?}");
        }
        assert_eq!(normalize_code("123 456").as_deref(), Some("123456"));
    }

    #[test]
    fn base32_round_trip_and_uri() {
        let b32 = secret_base32(RFC_SECRET);
        assert_eq!(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(secret_from_base32(&b32).unwrap(), RFC_SECRET);
        let uri = otpauth_uri(RFC_SECRET, "Example Co", "alice:x@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Example%20Co:alice%3Ax%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Example%20Co"
        );
    }

    #[test]
    fn qr_codes_render() {
        let uri = otpauth_uri(RFC_SECRET, "Rampart", "alice");
        let png = qr_png_data_uri(&uri).unwrap();
        assert!(png.starts_with("data:image/png;base64,iVBORw0KGgo"), "{}", &png[..40]);
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }

    /// The PNG decodes to the code's modules, each an 8×8 square, inside a
    /// white quiet zone.
    #[test]
    fn the_png_holds_the_code_module_by_module() {
        let uri = otpauth_uri(RFC_SECRET, "Rampart", "alice@example.com");
        let png = qr_png(&uri).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Grayscale, png::BitDepth::Eight));
        let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M).unwrap();
        let (modules, side) = (code.width(), info.width as usize);
        assert_eq!(side, (modules + 8) * 8);
        assert_eq!(info.height as usize, side);
        let colors = code.to_colors();
        for y in 0..side {
            for x in 0..side {
                let (mx, my) = ((x / 8).checked_sub(4), (y / 8).checked_sub(4));
                let dark = match (mx, my) {
                    (Some(mx), Some(my)) if mx < modules && my < modules => {
                        colors[my * modules + mx] == qrcode::Color::Dark
                    }
                    _ => false,
                };
                assert_eq!(pixels[y * side + x], if dark { 0 } else { 255 }, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn backup_codes_format_and_normalize() {
        let code = format_backup_code(&[0xff; BACKUP_CODE_BYTES]);
        assert_eq!(code, "7777-7777-7777-7777");
        assert_eq!(normalize_backup_code("7777 7777-7777-7777").as_deref(), Some("7777777777777777"));
        assert_eq!(normalize_backup_code("ABCD-EFGH-IJKL-MNOP").as_deref(), Some("abcdefghijklmnop"));
        for bad in ["", "123456", "abcd-efgh-ijkl-mno", "abcd-efgh-ijkl-mnop1", "abcd-efgh-ijkl-mn0p", "a\0"] {
            assert_eq!(normalize_backup_code(bad), None, "{bad:?}");
        }
    }
}
