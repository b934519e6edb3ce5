//! Encryption keys and the key check value that tells a wrong key from a
//! corrupt frame.

use std::fmt;
use std::path::{Path, PathBuf};

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

/// A key file that could not be read or holds no key: names the file, then
/// why (the reason is part of the message, not a separate cause, so every
/// way of printing errors shows it).
#[derive(Debug, thiserror::Error)]
#[error("encryption key file {}: {reason}", path.display())]
pub struct KeyFileError {
    path: PathBuf,
    reason: String,
}

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
            let decoded = decoded?;
            if let Ok(key) = <[u8; 32]>::try_from(decoded.as_slice()) {
                return Ok(EncryptionKey(key));
            }
            return Err(InvalidKey(format!("base64 of {} bytes", decoded.len())));
        }
        Err(InvalidKey(format!("{} characters of text", text.len())))
    }

    /// Reads a key file (see [`EncryptionKey::parse`]): the one reader of
    /// every command that takes `--encryption-key-file` or a config's
    /// `encryption-key-file`, so all name the file in the same words.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &Path) -> Result<EncryptionKey, KeyFileError> {
        let bytes = std::fs::read(path)
            .map_err(|error| KeyFileError { path: path.to_path_buf(), reason: format!("cannot be read: {error}") })?;
        EncryptionKey::parse(&bytes)
            .map_err(|error| KeyFileError { path: path.to_path_buf(), reason: error.to_string() })
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

/// Decodes base64 in one alphabet, standard (`+/`) or URL-safe (`-_`),
/// padded or not; `Err` with the reason for text that mixes the two, `None`
/// for text that is not base64 at all.
fn decode_base64(text: &str) -> Option<Result<Vec<u8>, InvalidKey>> {
    // Byte scans, not `str::contains` with a char set: its searcher costs
    // the .wasm reader more than the decoder itself.
    let has = |a: u8, b: u8| text.bytes().any(|c| c == a || c == b);
    if has(b'+', b'/') && has(b'-', b'_') {
        return Some(Err(InvalidKey(
            "base64 that mixes the standard (+ /) and URL-safe (- _) alphabets: write it in one, \
             e.g. with `openssl rand -base64 32`"
                .into(),
        )));
    }
    #[cfg(not(target_arch = "wasm32"))]
    return base64_crate(text).map(Ok);
    #[cfg(target_arch = "wasm32")]
    return base64_small(text).map(Ok);
}

/// Text of one alphabet through the base64 crate, padding optional.
#[cfg(not(target_arch = "wasm32"))]
fn base64_crate(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if text.bytes().any(|c| c == b'-' || c == b'_') { &URL_SAFE } else { &STANDARD };
    GeneralPurpose::new(alphabet, config).decode(text).ok()
}

/// The wasm reader's decoder for text of one alphabet: the base64 crate
/// costs its .wasm 2 KB gzipped, twice the room left under its size budget
/// (docs/BENCHMARKS.md). It answers as the crate does (tested natively
/// against it): canonical base64, `=` padding optional.
#[cfg(any(target_arch = "wasm32", test))]
fn base64_small(text: &str) -> Option<Vec<u8>> {
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
    // No more `=` than the last group lacks (`AA=` and `AA==`, not `AAA==`).
    if body.is_empty() || body.len() % 4 == 1 || text.len() - body.len() > (4 - body.len() % 4) % 4 {
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
    // Leftover bits are zero in canonical base64.
    (acc == 0).then_some(out)
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

    /// The hand-written decoder took `+` and `-` (and `/` and `_`) as the
    /// same digit, so a key mixing them decoded to something no tool wrote.
    #[test]
    fn refuses_base64_mixing_alphabets_naming_the_file_and_the_fix() {
        // Starts with `++++////` in base64.
        let mut raw: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        raw[..6].copy_from_slice(&[0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff]);
        let standard = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw);
        assert!(standard.contains('+') && standard.contains('/'), "{standard}");
        let url_safe = standard.replace('+', "-").replace('/', "_");
        for text in [&standard, standard.trim_end_matches('='), &url_safe, url_safe.trim_end_matches('=')] {
            assert_eq!(EncryptionKey::parse(text.as_bytes()).unwrap().0, raw, "{text}");
        }
        let mixed = standard.replacen('+', "-", 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.key");
        std::fs::write(&path, &mixed).unwrap();
        let error = EncryptionKey::from_file(&path).unwrap_err().to_string();
        for needle in [path.to_str().unwrap(), "mixes the standard (+ /) and URL-safe (- _)", "openssl rand"] {
            assert!(error.contains(needle), "{needle}: {error}");
        }
    }

    /// The wasm reader's decoder and the crate agree on well-formed and
    /// malformed text alike.
    #[test]
    fn the_small_decoder_answers_as_the_crate() {
        let raw: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        let standard = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw);
        let url_safe = standard.replace('+', "-").replace('/', "_");
        let mut inputs = vec![standard.clone(), url_safe.clone()];
        for text in [&standard, &url_safe] {
            let body = text.trim_end_matches('=');
            inputs.extend([body.to_string(), format!("{body}=="), format!("{body}A"), format!("{body}B")]);
            inputs.extend([format!("{}B", &body[..body.len() - 1]), format!("{}*", &body[..body.len() - 1])]);
        }
        inputs.extend(["AAAA", "AA==", "AA=", "A", "AB==", "====", "QQ", "QQ=", "QQ=="].map(String::from));
        for text in &inputs {
            assert_eq!(base64_small(text), base64_crate(text), "{text}");
        }
    }

    #[test]
    fn reads_key_files_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(EncryptionKey::from_file(&path).unwrap().0, [0xab; 32]);
        let missing = EncryptionKey::from_file(&dir.path().join("none")).unwrap_err().to_string();
        assert!(missing.contains("none: cannot be read"), "{missing}");
        std::fs::write(&path, "short").unwrap();
        let short = EncryptionKey::from_file(&path).unwrap_err().to_string();
        assert!(short.contains(&format!("{}: invalid encryption key", path.display())), "{short}");
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
