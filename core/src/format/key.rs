//! Encryption keys and the key check value that tells a wrong key from a
//! corrupt frame.

use std::fmt;

use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};

/// A 256-bit AES-GCM key shared by the primary and the readers. The
/// compactor never needs it: it copies sealed frames as bytes.
#[derive(Clone)]
pub struct EncryptionKey(pub(crate) [u8; 32]);

/// Never print key material, even in debug logs.
impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(check={})", self.check())
    }
}

/// A key that could not be read from a key file.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid encryption key: {0} (expected 32 raw bytes, 64 hex digits or 44 base64 characters; generate one with `openssl rand -hex 32`)"
)]
pub struct InvalidKey(String);

impl EncryptionKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> EncryptionKey {
        EncryptionKey(bytes)
    }

    /// Parses the contents of a key file: exactly 32 raw bytes, or 64 hex
    /// digits, or standard base64 of 32 bytes (surrounding whitespace allowed
    /// for the text forms).
    pub fn parse(contents: &[u8]) -> Result<EncryptionKey, InvalidKey> {
        if contents.len() == 32 {
            let text = std::str::from_utf8(contents).map(str::trim);
            // 32 bytes of printable text that decodes as neither form is far
            // more likely a truncated text key than raw key material.
            if !matches!(text, Ok(t) if t.len() == 32 && t.bytes().all(|b| b.is_ascii_graphic())) {
                let mut key = [0u8; 32];
                key.copy_from_slice(contents);
                return Ok(EncryptionKey(key));
            }
        }
        let text = std::str::from_utf8(contents)
            .map_err(|_| InvalidKey(format!("{} bytes of binary data", contents.len())))?
            .trim();
        if text.len() == 64 {
            let mut key = [0u8; 32];
            for (i, byte) in key.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                    .map_err(|_| InvalidKey("64 characters that are not all hex digits".into()))?;
            }
            return Ok(EncryptionKey(key));
        }
        if let Some(decoded) = decode_base64(text) {
            if let Ok(key) = <[u8; 32]>::try_from(decoded.as_slice()) {
                return Ok(EncryptionKey(key));
            }
            return Err(InvalidKey(format!("base64 of {} bytes", decoded.len())));
        }
        Err(InvalidKey(format!("{} characters of text", text.len())))
    }

    /// The key check value recorded in segment headers.
    pub fn check(&self) -> KeyCheck {
        // The standard "key check value" construction: encrypt a constant
        // block and keep part of it. It identifies the key without revealing
        // anything usable about it.
        let cipher = Aes256::new(GenericArray::from_slice(&self.0));
        let mut block = GenericArray::clone_from_slice(b"distributary-kcv");
        cipher.encrypt_block(&mut block);
        let mut first = [0u8; 8];
        first.copy_from_slice(&block[..8]);
        // Zero means "not encrypted"; a key whose check is zero (odds 2^-64)
        // is still told apart by flipping one bit.
        KeyCheck(u64::from_be_bytes(first).max(1))
    }
}

/// Identifies an encryption key without revealing it: the first 8 bytes of
/// the key encrypting the block `"distributary-kcv"`. Zero means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyCheck(pub u64);

impl KeyCheck {
    /// The value in headers of segments that are not encrypted.
    pub const NONE: KeyCheck = KeyCheck(0);
}

impl fmt::Display for KeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let body = text.trim_end_matches('=');
    if body.is_empty() || text.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in body.bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_raw_hex_and_base64_forms_of_the_same_key() {
        let raw: [u8; 32] = std::array::from_fn(|i| (i * 7 + 200) as u8);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let from_raw = EncryptionKey::parse(&raw).unwrap();
        let from_hex = EncryptionKey::parse(format!("{hex}\n").as_bytes()).unwrap();
        assert_eq!(from_raw.0, from_hex.0);
        // base64 of 32 zero bytes.
        let zero = EncryptionKey::parse(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        assert_eq!(zero.0, [0u8; 32]);
    }

    #[test]
    fn rejects_keys_of_the_wrong_length_with_a_hint() {
        let err = EncryptionKey::parse(b"abcd").unwrap_err().to_string();
        assert!(err.contains("openssl rand -hex 32"), "{err}");
    }

    #[test]
    fn different_keys_have_different_checks_and_debug_hides_the_key() {
        let a = EncryptionKey::from_bytes([1; 32]);
        let b = EncryptionKey::from_bytes([2; 32]);
        assert_ne!(a.check(), b.check());
        assert_ne!(a.check(), KeyCheck::NONE);
        assert!(!format!("{a:?}").contains("0101"));
    }
}
