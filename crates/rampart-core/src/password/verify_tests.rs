#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Known-answer tests with hashes made by the reference implementations.
//!
//! Every vector is a hash of `PASSWORD`, generated once with Python 3.11 in a
//! throwaway venv (`pip install passlib bcrypt argon2-cffi django`; passlib
//! 1.7.4, bcrypt 5.0.0, argon2-cffi 25.1.0, Django 5.2.19):
//!
//! ```python
//! PW = "correct horse battery staple"
//! argon2.PasswordHasher().hash(PW)                                    # argon2-cffi defaults
//! argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(PW)
//! argon2.PasswordHasher(..., type=argon2.Type.I).hash(PW)             # argon2i, argon2d
//! argon2.low_level.hash_secret(PW.encode(), b"saltsaltsalt", ..., version=16)
//! bcrypt.hashpw(PW.encode(), bcrypt.gensalt(rounds=10))               # $2b$
//! bcrypt.hashpw(PW.encode(), bcrypt.gensalt(rounds=10, prefix=b"2a")) # $2a$
//! passlib.hash.bcrypt.using(ident="2y", rounds=10).hash(PW)           # builtin backend
//! passlib.hash.pbkdf2_sha256.hash(PW)                                 # and .using(rounds=1000)
//! django.contrib.auth.hashers.make_password(PW)                       # PBKDF2PasswordHasher
//! PBKDF2PasswordHasher().encode(PW, "seasalt1234", iterations=1000)
//! ```

use super::*;

const PASSWORD: &str = "correct horse battery staple";
const WRONG: &[&str] = &["correct horse battery stapler", "Correct horse battery staple", ""];

/// argon2-cffi with OWASP parameters: exactly our default, so no rehash.
const ARGON2ID_OWASP: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$xiCUxexmn4o7WoJIy3k2Ow$OmL4oYQbH7PL9KyLbToCJ7n29kdvHfIhjo+7CDDUtB8";
/// argon2-cffi's own defaults (RFC 9106's second recommendation).
const ARGON2ID_CFFI_DEFAULT: &str =
    "$argon2id$v=19$m=65536,t=3,p=4$NCr2T0dLuaa6d0qIxcoImA$A1Yt7d1jXKJgtXspJ2rgaiTO6ieOYkLe8HTfNDD+79Y";
const ARGON2I_OWASP: &str =
    "$argon2i$v=19$m=19456,t=2,p=1$yzRG4h0ptrnzyIhO35ApDQ$SkxL4VhTLa2aGkph+B0L7/anH7vwC54GlkORfH6dhRY";
const ARGON2ID_CHEAP: &str =
    "$argon2id$v=19$m=64,t=1,p=1$qBFlKERB/Nh0HdbkVy4R1w$77AoaF5fUpvsPEY5ubH+mPjN4PEhMMmwsNspmL3sMms";
const ARGON2I_CHEAP: &str =
    "$argon2i$v=19$m=64,t=1,p=1$5HbmsBr7BKpgyFQO4C/xGA$vyRWL2EodIhsMGS7HTvI7tvjpCpaiyIivooFxl+Lmro";
/// Two lanes, an 8-byte salt and a 16-byte output.
const ARGON2ID_TWO_LANES_SHORT: &str = "$argon2id$v=19$m=128,t=2,p=2$AsEujE05w6U$tgwsaE1/Iclu60SojyrmeQ";
/// Argon2 version 0x10 (1.0), as still found in old databases.
const ARGON2ID_V16: &str = "$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$YoLqaXlHm0e83mTGgSSUY8O5HiY5qII14ZPKTCqRiSs";
const ARGON2D: &str = "$argon2d$v=19$m=64,t=1,p=1$yfLBN7SO9JI815HUECVsdw$zULoaFeB7/WXf6VRwuRtJAnSz0ePSYma8gED9VKiG2Q";

const BCRYPT_2B: &str = "$2b$10$TyT0OiWwA0vnErq6TZAoPujehB59xmBTmCTOppnZXS.kLsCIcLS8e";
const BCRYPT_2A: &str = "$2a$10$yyWu9NC6IauQ1VNp/bgU1O5/TtaokCL7Y1sQP.08asFSCcFc0kMku";
const BCRYPT_2Y: &str = "$2y$10$s8s238YVFbQ8jK4ld/Gi9.9nsMXxff3FUOsMZts8Cn3qdhKq42iHm";
const BCRYPT_2B_COST4: &str = "$2b$04$Qt0wYSBkpWQR7Dd4.XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGkme";
const BCRYPT_2Y_COST4: &str = "$2y$04$BQ3AsmwGJS.j06U4Ee3epewHnWPaClupVIW3I87YxYvz9XjbOYdYi";

/// passlib's default 29,000 rounds; the checksum has a `.` (ab64 for `+`).
const PASSLIB_PBKDF2: &str = "$pbkdf2-sha256$29000$JoRwrrW2tpaylrLWGkPo/Q$TOYXISLiQNPYFXqkGBFzR6FH1NrDJ4YqYFzKjQiyi.c";
const PASSLIB_PBKDF2_1000: &str =
    "$pbkdf2-sha256$1000$55yTMub8/58TgtAa43xP6Q$rczRkpgt/5s1nfijSWn/4RdZkzQvqFY.PDztfBDFJbk";

/// Django 5.2's default 1,000,000 iterations.
const DJANGO_PBKDF2: &str = "pbkdf2_sha256$1000000$5lhtUG1gGzVbdTeINfwWmo$iLeWr9NfVZT68/SZWnkqcBHSmFD/wOVsTmTEy6CjzQA=";
const DJANGO_PBKDF2_1000: &str = "pbkdf2_sha256$1000$seasalt1234$JlBQ/OWmu3PcCFg2koQd315wDykzd702rqDsH8M7iWI=";

/// The password verifies with the expected outcome, and every wrong one is a
/// plain mismatch.
#[track_caller]
fn check(stored: &str, scheme: Scheme, needs_rehash: bool) {
    let current = Argon2Params::default();
    assert_eq!(verify(PASSWORD, stored, &current), Ok(Verified { scheme, needs_rehash }), "{stored}");
    assert_eq!(identify(stored), Ok(scheme), "{stored}");
    for wrong in WRONG {
        assert_eq!(verify(wrong, stored, &current), Err(PasswordError::Mismatch), "{wrong:?} against {stored}");
    }
}

#[test]
fn argon2id_with_current_params_needs_no_rehash() {
    check(ARGON2ID_OWASP, Scheme::Argon2id, false);
}

#[test]
fn argon2id_with_other_params_needs_rehash() {
    check(ARGON2ID_CFFI_DEFAULT, Scheme::Argon2id, true);
    check(ARGON2ID_CHEAP, Scheme::Argon2id, true);
    check(ARGON2ID_TWO_LANES_SHORT, Scheme::Argon2id, true);
    // The cheap hash is current when the cheap parameters are.
    let cheap = Argon2Params::new(64, 1, 1).unwrap();
    assert_eq!(
        verify(PASSWORD, ARGON2ID_CHEAP, &cheap),
        Ok(Verified { scheme: Scheme::Argon2id, needs_rehash: false })
    );
}

#[test]
fn argon2id_version_0x10_verifies_and_needs_rehash() {
    check(ARGON2ID_V16, Scheme::Argon2id, true);
    // Version 0x10 with the same numbers is not current either.
    let cheap = Argon2Params::new(64, 1, 1).unwrap();
    assert!(verify(PASSWORD, ARGON2ID_V16, &cheap).unwrap().needs_rehash);
    // A hash without `v=` is version 0x10, as in the reference implementation.
    let unversioned = ARGON2ID_V16.replace("v=16$", "");
    assert!(verify(PASSWORD, &unversioned, &cheap).unwrap().needs_rehash);
}

#[test]
fn argon2i_verifies_and_needs_rehash() {
    check(ARGON2I_OWASP, Scheme::Argon2i, true);
    check(ARGON2I_CHEAP, Scheme::Argon2i, true);
}

#[test]
fn argon2d_is_unsupported() {
    assert_eq!(verify(PASSWORD, ARGON2D, &Argon2Params::default()), Err(PasswordError::UnsupportedScheme));
}

#[test]
fn bcrypt_variants_verify_and_need_rehash() {
    check(BCRYPT_2B, Scheme::Bcrypt, true);
    check(BCRYPT_2A, Scheme::Bcrypt, true);
    check(BCRYPT_2Y, Scheme::Bcrypt, true);
    check(BCRYPT_2B_COST4, Scheme::Bcrypt, true);
    check(BCRYPT_2Y_COST4, Scheme::Bcrypt, true);
}

#[test]
fn bcrypt_2x_is_unsupported() {
    let buggy = BCRYPT_2B_COST4.replacen("$2b$", "$2x$", 1);
    assert_eq!(verify(PASSWORD, &buggy, &Argon2Params::default()), Err(PasswordError::UnsupportedScheme));
}

#[test]
fn passlib_pbkdf2_sha256_verifies_and_needs_rehash() {
    check(PASSLIB_PBKDF2, Scheme::PasslibPbkdf2Sha256, true);
    check(PASSLIB_PBKDF2_1000, Scheme::PasslibPbkdf2Sha256, true);
}

#[test]
fn django_pbkdf2_sha256_verifies_and_needs_rehash() {
    check(DJANGO_PBKDF2_1000, Scheme::DjangoPbkdf2Sha256, true);
}

#[test]
#[ignore = "Django's default of one million iterations takes about 10 s in a debug build"]
fn django_pbkdf2_sha256_default_iterations() {
    let verified = verify(PASSWORD, DJANGO_PBKDF2, &Argon2Params::default());
    assert_eq!(verified, Ok(Verified { scheme: Scheme::DjangoPbkdf2Sha256, needs_rehash: true }));
}

#[test]
fn own_hashes_round_trip() {
    let params = Argon2Params::new(64, 1, 1).unwrap();
    let stored = super::super::hash(PASSWORD, &params).unwrap();
    assert_eq!(verify(PASSWORD, &stored, &params), Ok(Verified { scheme: Scheme::Argon2id, needs_rehash: false }));
    assert_eq!(verify("nope", &stored, &params), Err(PasswordError::Mismatch));
    let stronger = Argon2Params::new(128, 1, 1).unwrap();
    assert!(verify(PASSWORD, &stored, &stronger).unwrap().needs_rehash);
}

#[test]
fn bcrypt_compares_only_the_first_72_bytes() {
    // What every bcrypt implementation that made such hashes did.
    let long = "a".repeat(80);
    let stored = bcrypt::hash_with_salt(&long[..72], 4, [1; 16]).unwrap().format_for_version(bcrypt::Version::TwoB);
    assert!(verify(&long, &stored, &Argon2Params::default()).is_ok());
}

#[test]
fn work_factors_above_the_caps_are_refused_before_hashing() {
    let current = Argon2Params::default();
    let too_costly =
        |stored: &str| matches!(verify(PASSWORD, stored, &current), Err(PasswordError::CostTooHigh { .. }));
    // Each would take minutes or gigabytes if it were attempted.
    assert!(too_costly(&ARGON2ID_CHEAP.replace("m=64,", "m=4194304,")));
    assert!(too_costly(&ARGON2ID_CHEAP.replace("t=1,", "t=1000,")));
    assert!(too_costly(&ARGON2ID_CHEAP.replace("p=1$", "p=255$").replace("m=64,", "m=4096,")));
    assert!(too_costly(&BCRYPT_2B.replace("$10$", "$31$")));
    assert!(too_costly(&BCRYPT_2B.replace("$10$", "$17$")));
    assert!(too_costly(&PASSLIB_PBKDF2.replace("$29000$", "$4294967295$")));
    assert!(too_costly(&PASSLIB_PBKDF2.replace("$29000$", "$99999999999999999999999999$")));
    assert!(too_costly(&DJANGO_PBKDF2.replace("$1000000$", "$10000001$")));
}

#[test]
fn hostile_or_broken_strings_are_errors() {
    let current = Argon2Params::default();
    let cases = [
        "",
        "$",
        "$$$$",
        "plaintext",
        "$argon2id$",
        "$argon2id$v=19$m=64,t=1,p=1$$",
        "$argon2id$v=19$m=64,t=1,p=1$qBFlKERB/Nh0HdbkVy4R1w$",
        "$argon2id$v=99$m=64,t=1,p=1$qBFlKERB/Nh0HdbkVy4R1w$77AoaF5fUpvsPEY5ubH+mPjN4PEhMMmwsNspmL3sMms",
        "$argon2id$v=19$m=0,t=0,p=0$qBFlKERB/Nh0HdbkVy4R1w$77AoaF5fUpvsPEY5ubH+mPjN4PEhMMmwsNspmL3sMms",
        "$argon2id$v=19$m=64,t=1,p=1,x=1$qBFlKERB/Nh0HdbkVy4R1w$77AoaF5fUpvsPEY5ubH+mPjN4PEhMMmwsNspmL3sMms",
        // A 4-byte salt is valid PHC but too short for argon2.
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$77AoaF5fUpvsPEY5ubH+mPjN4PEhMMmwsNspmL3sMms",
        "$argon2id$v=19$m=-1,t=1,p=1$qBFlKERB/Nh0HdbkVy4R1w$77AoaF5fUpvsPEY5ubH+mPjN4PEhMMmwsNspmL3sMms",
        "$2b$",
        "$2b$10$",
        "$2b$03$Qt0wYSBkpWQR7Dd4.XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGkme",
        "$2b$1a$Qt0wYSBkpWQR7Dd4.XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGkme",
        "$2b$04$Qt0wYSBkpWQR7Dd4.XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGkm",
        "$2b$04$Qt0wYSBkpWQR7Dd4.XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGkme=",
        "$2b$04$Qt0wYSBkpWQR7Dd4+XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGkme",
        "$2b$04$Qt0wYSBkpWQR7Dd4é.XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGk",
        "$2$04$Qt0wYSBkpWQR7Dd4.XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGkmeAB",
        "$pbkdf2-sha256$",
        "$pbkdf2-sha256$0$55yTMub8/58TgtAa43xP6Q$rczRkpgt/5s1nfijSWn/4RdZkzQvqFY.PDztfBDFJbk",
        "$pbkdf2-sha256$-1$55yTMub8/58TgtAa43xP6Q$rczRkpgt/5s1nfijSWn/4RdZkzQvqFY.PDztfBDFJbk",
        "$pbkdf2-sha256$1000$55yTMub8/58TgtAa43xP6Q$rczRkpgt/5s1nfijSWn/4RdZkzQvqFY.PDztfBDFJb",
        "$pbkdf2-sha256$1000$55yTMub8/58TgtAa43xP6Q$rczRkpgt/5s1nfijSWn/4RdZkzQvqFY+PDztfBDFJbk",
        "$pbkdf2-sha256$1000$55yTMub8/58TgtAa43xP6Q$rczRkpgt/5s1nfijSWn/4RdZkzQvqFY.PDztfBDFJbk$",
        "$pbkdf2-sha256$1000$!!$rczRkpgt/5s1nfijSWn/4RdZkzQvqFY.PDztfBDFJbk",
        "pbkdf2_sha256$",
        "pbkdf2_sha256$1000$$JlBQ/OWmu3PcCFg2koQd315wDykzd702rqDsH8M7iWI=",
        "pbkdf2_sha256$1000$seasalt1234$JlBQ/OWmu3PcCFg2koQd315wDykzd702rqDsH8M7iWI",
        "pbkdf2_sha256$1000$seasalt1234$JlBQ",
        "pbkdf2_sha256$ 1000$seasalt1234$JlBQ/OWmu3PcCFg2koQd315wDykzd702rqDsH8M7iWI=",
        "pbkdf2_sha256$+1000$seasalt1234$JlBQ/OWmu3PcCFg2koQd315wDykzd702rqDsH8M7iWI=",
        "pbkdf2_sha1$1000$seasalt1234$JlBQ/OWmu3PcCFg2koQd315wDykzd702rqDsH8M7iWI=",
        "{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
    ];
    for stored in cases {
        let result = verify(PASSWORD, stored, &current);
        assert!(
            matches!(result, Err(ref err) if *err != PasswordError::Mismatch),
            "{stored:?} gave {result:?}, expected a format error"
        );
        assert_eq!(identify(stored).err(), result.err(), "identify({stored:?}) and verify disagree");
    }
    let huge = format!("$pbkdf2-sha256$1000${}$x", "A".repeat(100_000));
    assert!(matches!(verify(PASSWORD, &huge, &current), Err(PasswordError::Malformed { .. })));
    assert!(matches!(identify(&huge), Err(PasswordError::Malformed { .. })));
}

#[test]
fn identify_names_every_supported_scheme_without_a_password() {
    let cases = [
        (ARGON2ID_OWASP, Scheme::Argon2id),
        (ARGON2ID_V16, Scheme::Argon2id),
        (ARGON2ID_TWO_LANES_SHORT, Scheme::Argon2id),
        (ARGON2I_OWASP, Scheme::Argon2i),
        (BCRYPT_2A, Scheme::Bcrypt),
        (BCRYPT_2B, Scheme::Bcrypt),
        (BCRYPT_2Y, Scheme::Bcrypt),
        (PASSLIB_PBKDF2, Scheme::PasslibPbkdf2Sha256),
        (DJANGO_PBKDF2, Scheme::DjangoPbkdf2Sha256),
    ];
    for (stored, scheme) in cases {
        assert_eq!(identify(stored), Ok(scheme), "{stored}");
    }
    assert_eq!(identify(ARGON2D), Err(PasswordError::UnsupportedScheme));
    assert_eq!(identify(&BCRYPT_2B_COST4.replacen("$2b$", "$2x$", 1)), Err(PasswordError::UnsupportedScheme));
    assert!(matches!(identify(&BCRYPT_2B.replacen("$10$", "$17$", 1)), Err(PasswordError::CostTooHigh { .. })));
}

#[test]
fn oversized_password_is_refused_before_hashing() {
    let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
    let result = verify(&long, PASSLIB_PBKDF2_1000, &Argon2Params::default());
    assert_eq!(result, Err(PasswordError::PasswordTooLong { max_bytes: MAX_PASSWORD_BYTES }));
}

/// Every prefix of every cheap vector, and every vector with one character
/// replaced, is refused: never a panic, and never a match.
#[test]
fn truncated_and_mutated_hashes_never_panic_or_match() {
    let current = Argon2Params::default();
    let vectors =
        [ARGON2ID_CHEAP, ARGON2I_CHEAP, ARGON2ID_V16, BCRYPT_2B_COST4, PASSLIB_PBKDF2_1000, DJANGO_PBKDF2_1000];
    let replacements = ['$', '0', '9', 'A', '.', '/', '=', ',', 'é'];
    for stored in vectors {
        for (i, _) in stored.char_indices() {
            assert!(verify(PASSWORD, &stored[..i], &current).is_err(), "prefix {:?}", &stored[..i]);
        }
        for (i, original) in stored.char_indices() {
            for replacement in replacements.iter().filter(|&&r| r != original) {
                let mut mutated = String::with_capacity(stored.len() + 1);
                mutated.push_str(&stored[..i]);
                mutated.push(*replacement);
                mutated.push_str(&stored[i + original.len_utf8()..]);
                let result = verify(PASSWORD, &mutated, &current);
                assert!(result.is_err(), "{mutated:?} verified as {result:?}");
                // A shape error from either is one from both.
                if let Err(e) = identify(&mutated) {
                    assert_eq!(result, Err(e), "{mutated:?}");
                }
            }
        }
    }
}
