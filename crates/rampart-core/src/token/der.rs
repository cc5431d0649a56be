//! Just enough DER to read keys: `SubjectPublicKeyInfo` (RFC 5280) for Ed25519,
//! P-256 and RSA, PKCS#1 `RSAPublicKey` (RFC 8017), and the outer layer of PKCS#8.
//!
//! ring verifies with raw key material (an Ed25519 point, an uncompressed P-256
//! point, an RSA modulus and exponent) and the JWKS we publish needs the same
//! numbers, so public PEM files are taken apart here instead of being handed to
//! a library as opaque bytes. The reader is strict: definite minimal lengths, no
//! trailing bytes, only the algorithm identifiers we support.

use super::keys::KeyError;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;

/// 1.3.101.112, id-Ed25519 (RFC 8410).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// 1.2.840.10045.2.1, id-ecPublicKey (RFC 5480).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7, secp256r1 (RFC 5480).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.2.840.113549.1.1.1, rsaEncryption (RFC 8017).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The key inside a `SubjectPublicKeyInfo`, still unchecked for size.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SpkiKey<'a> {
    /// The 32-byte public point.
    Ed25519(&'a [u8]),
    /// The SEC 1 encoded point, `0x04 || x || y` when uncompressed.
    P256(&'a [u8]),
    /// Big-endian modulus and exponent without leading zeros.
    Rsa { n: &'a [u8], e: &'a [u8] },
}

struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    /// Reads one element that must carry `tag` and returns its contents.
    fn read(&mut self, tag: u8) -> Result<&'a [u8], KeyError> {
        let (&found, rest) = self.input.split_first().ok_or(KeyError::InvalidKey)?;
        if found != tag {
            return Err(KeyError::InvalidKey);
        }
        let (&first, rest) = rest.split_first().ok_or(KeyError::InvalidKey)?;
        // DER lengths: short form below 128, otherwise the minimal long form.
        // Two length bytes cover every key we accept (an 8192-bit RSA key is
        // about 1 KiB).
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81 => match rest.split_first() {
                Some((&b, rest)) if b >= 0x80 => (usize::from(b), rest),
                _ => return Err(KeyError::InvalidKey),
            },
            0x82 => match rest {
                [hi, lo, rest @ ..] if *hi != 0 => ((usize::from(*hi) << 8) | usize::from(*lo), rest),
                _ => return Err(KeyError::InvalidKey),
            },
            _ => return Err(KeyError::InvalidKey),
        };
        if rest.len() < len {
            return Err(KeyError::InvalidKey);
        }
        let (contents, rest) = rest.split_at(len);
        self.input = rest;
        Ok(contents)
    }

    fn finish(&self) -> Result<(), KeyError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(KeyError::InvalidKey)
        }
    }
}

/// The key types of the algorithm identifiers we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyKind {
    Ed25519,
    P256,
    Rsa,
}

/// Reads the contents of an `AlgorithmIdentifier`.
fn algorithm(contents: &[u8]) -> Result<KeyKind, KeyError> {
    let mut alg_id = Reader::new(contents);
    let oid = alg_id.read(OID)?;
    let kind = if oid == OID_ED25519 {
        KeyKind::Ed25519
    } else if oid == OID_EC_PUBLIC_KEY {
        if alg_id.read(OID)? != OID_P256 {
            return Err(KeyError::WrongKeyType);
        }
        KeyKind::P256
    } else if oid == OID_RSA {
        // The parameters are NULL, though some encoders leave them out.
        if !alg_id.input.is_empty() && !alg_id.read(NULL)?.is_empty() {
            return Err(KeyError::InvalidKey);
        }
        KeyKind::Rsa
    } else {
        return Err(KeyError::WrongKeyType);
    };
    alg_id.finish()?;
    Ok(kind)
}

/// Parses a DER `SubjectPublicKeyInfo`.
pub(super) fn spki(der: &[u8]) -> Result<SpkiKey<'_>, KeyError> {
    let mut outer = Reader::new(der);
    let mut info = Reader::new(outer.read(SEQUENCE)?);
    outer.finish()?;
    let kind = algorithm(info.read(SEQUENCE)?)?;
    let bits = info.read(BIT_STRING)?;
    info.finish()?;
    // The first byte of a BIT STRING counts unused bits; a key has none.
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err(KeyError::InvalidKey),
    };
    Ok(match kind {
        KeyKind::Ed25519 => SpkiKey::Ed25519(key),
        KeyKind::P256 => SpkiKey::P256(key),
        KeyKind::Rsa => {
            let (n, e) = rsa_public_key(key)?;
            SpkiKey::Rsa { n, e }
        }
    })
}

/// Reads the key type and the inner private key of a PKCS#8 `PrivateKeyInfo`
/// or `OneAsymmetricKey` (RFC 5958). ring checks the private key itself; this
/// only lets us say "wrong key type" or "RSA key too small" precisely.
pub(super) fn pkcs8(der: &[u8]) -> Result<(KeyKind, &[u8]), KeyError> {
    let mut outer = Reader::new(der);
    let mut info = Reader::new(outer.read(SEQUENCE)?);
    outer.finish()?;
    // Version 0 is PKCS#8 v1; version 1 adds the public key (ring's own output).
    if !matches!(info.read(INTEGER)?, [0] | [1]) {
        return Err(KeyError::InvalidKey);
    }
    let kind = algorithm(info.read(SEQUENCE)?)?;
    let private_key = info.read(OCTET_STRING)?;
    Ok((kind, private_key))
}

/// The bit length of the modulus in a PKCS#1 `RSAPrivateKey`.
pub(super) fn rsa_private_key_modulus_bits(der: &[u8]) -> Result<usize, KeyError> {
    let mut outer = Reader::new(der);
    let mut seq = Reader::new(outer.read(SEQUENCE)?);
    outer.finish()?;
    let _version = seq.read(INTEGER)?;
    Ok(bit_length(positive_integer(seq.read(INTEGER)?)?))
}

/// The bit length of a big-endian number without leading zero bytes.
pub(super) fn bit_length(magnitude: &[u8]) -> usize {
    match magnitude.first() {
        Some(&first) => magnitude.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// Parses a DER PKCS#1 `RSAPublicKey` into modulus and exponent.
pub(super) fn rsa_public_key(der: &[u8]) -> Result<(&[u8], &[u8]), KeyError> {
    let mut outer = Reader::new(der);
    let mut seq = Reader::new(outer.read(SEQUENCE)?);
    outer.finish()?;
    let n = positive_integer(seq.read(INTEGER)?)?;
    let e = positive_integer(seq.read(INTEGER)?)?;
    seq.finish()?;
    Ok((n, e))
}

/// The magnitude of a minimally encoded, positive DER INTEGER.
fn positive_integer(bytes: &[u8]) -> Result<&[u8], KeyError> {
    match bytes {
        [] => Err(KeyError::InvalidKey),
        // A high first bit would make the number negative.
        [first, ..] if first & 0x80 != 0 => Err(KeyError::InvalidKey),
        // One leading zero is allowed only when the next byte needs it.
        [0, next, ..] if next & 0x80 != 0 => Ok(&bytes[1..]),
        [0, ..] => Err(KeyError::InvalidKey),
        _ => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ed25519_spki() {
        let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        der.extend([7u8; 32]);
        assert_eq!(spki(&der).unwrap(), SpkiKey::Ed25519(&[7u8; 32]));
        // Trailing garbage, a truncated body and unused bits are all refused.
        let mut long = der.clone();
        long.push(0);
        assert!(spki(&long).is_err());
        assert!(spki(&der[..der.len() - 1]).is_err());
        let mut unused_bits = der.clone();
        unused_bits[11] = 1;
        assert!(spki(&unused_bits).is_err());
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(positive_integer(&[0x01, 0x00, 0x01]).unwrap(), &[0x01, 0x00, 0x01]);
        assert_eq!(positive_integer(&[0x00, 0x80]).unwrap(), &[0x80]);
        assert!(positive_integer(&[0x80]).is_err());
        assert!(positive_integer(&[0x00, 0x01]).is_err());
        assert!(positive_integer(&[0x00]).is_err());
        assert!(positive_integer(&[]).is_err());
    }

    #[test]
    fn lengths_are_minimal() {
        // 0x81 may only introduce lengths of 128 and more.
        assert!(Reader::new(&[0x30, 0x81, 0x01, 0x00]).read(0x30).is_err());
        assert!(Reader::new(&[0x30, 0x82, 0x00, 0x01, 0x00]).read(0x30).is_err());
        // Indefinite and over-long forms are refused.
        assert!(Reader::new(&[0x30, 0x80, 0x00, 0x00]).read(0x30).is_err());
        assert!(Reader::new(&[0x30, 0x83, 0x00, 0x00, 0x01, 0x00]).read(0x30).is_err());
        assert_eq!(Reader::new(&[0x30, 0x01, 0x05]).read(0x30).unwrap(), &[0x05]);
    }
}
