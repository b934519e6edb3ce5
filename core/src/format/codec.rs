//! Page images to frame payloads and back: zstd on its own per page (with
//! zstd's content checksum, so a page fetched alone by a range request is
//! still verified), then, with a key, AES-256-GCM sealing.
//!
//! Sealed payload: `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with
//! associated data `generation id (16 bytes) || page number (4 bytes, BE)`,
//! so a frame cannot be replayed at another page or into another database.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

use super::FormatError;
use super::key::{EncryptionKey, KeyCheck};
use crate::ids::{GenerationId, PageNo};

const NONCE_SIZE: usize = 12;
const TAG_SIZE: usize = 16;

/// Compression settings.
#[derive(Clone, Copy, Debug)]
pub struct Compression {
    /// zstd level (1 = fastest; 3 is zstd's default).
    pub level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression { level: 3 }
    }
}

/// Encodes and decodes frame payloads for one database identity and key.
pub struct PageCodec {
    generation: GenerationId,
    cipher: Option<(Aes256Gcm, KeyCheck)>,
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
    compression: Compression,
}

impl std::fmt::Debug for PageCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCodec").field("generation", &self.generation).field("key_check", &self.key_check()).finish()
    }
}

impl PageCodec {
    /// A codec for pages of `generation`, sealing with `key` if given.
    pub fn new(
        generation: GenerationId,
        key: Option<&EncryptionKey>,
        compression: Compression,
    ) -> Result<PageCodec, FormatError> {
        let cipher = key.map(|key| (Aes256Gcm::new(&key.0.into()), key.check()));
        let (compressor, decompressor) = zstd_contexts(generation, compression)?;
        Ok(PageCodec { generation, cipher, compressor, decompressor, compression })
    }

    /// A codec for the same generation, key and compression with zstd
    /// contexts of its own, for another thread.
    pub fn fork(&self) -> Result<PageCodec, FormatError> {
        let (compressor, decompressor) = zstd_contexts(self.generation, self.compression)?;
        Ok(PageCodec { cipher: self.cipher.clone(), compressor, decompressor, ..*self })
    }

    /// The key check to write in headers ([`KeyCheck::NONE`] without a key).
    pub fn key_check(&self) -> KeyCheck {
        self.cipher.as_ref().map_or(KeyCheck::NONE, |(_, check)| *check)
    }

    /// Compresses (and seals) one page image into a frame payload.
    pub fn encode_page(&mut self, object: &str, pgno: PageNo, page: &[u8]) -> Result<Vec<u8>, FormatError> {
        let compressed = self.compressor.compress(page).map_err(|e| FormatError::Misuse {
            object: object.to_string(),
            reason: format!("compress page {pgno}: {e}"),
        })?;
        let Some((cipher, _)) = &self.cipher else {
            return Ok(compressed);
        };
        let mut nonce = [0u8; NONCE_SIZE];
        getrandom::fill(&mut nonce).map_err(|e| FormatError::Misuse {
            object: object.to_string(),
            reason: format!("draw a nonce for page {pgno}: {e}"),
        })?;
        let aad = associated_data(self.generation, pgno);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &compressed, aad: &aad })
            .map_err(|_| FormatError::Misuse { object: object.to_string(), reason: format!("seal page {pgno}") })?;
        let mut payload = Vec::with_capacity(NONCE_SIZE + sealed.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&sealed);
        Ok(payload)
    }

    /// Checks that this codec can open frames of a segment whose header says
    /// `key_check`: the right key, or no key for a plain segment.
    pub fn check_key(&self, object: &str, key_check: KeyCheck) -> Result<(), FormatError> {
        let ours = self.key_check();
        if ours == key_check {
            return Ok(());
        }
        let reason = match (key_check == KeyCheck::NONE, ours == KeyCheck::NONE) {
            (false, true) => "the segment is encrypted and no encryption key is configured (pass the key file)".to_string(),
            (true, false) => "the segment is not encrypted but an encryption key is configured (remove the key, or point at the encrypted store)".to_string(),
            _ => format!(
                "wrong encryption key: the segment was sealed with key {key_check}, the configured key is {ours} (use the key the primary uses)"
            ),
        };
        Err(FormatError::WrongKey { object: object.to_string(), reason })
    }

    /// Opens (and decompresses) a frame payload into `page`, which must be
    /// exactly one page long.
    pub fn decode_page(
        &mut self,
        object: &str,
        pgno: PageNo,
        payload: &[u8],
        page: &mut [u8],
    ) -> Result<(), FormatError> {
        let bad = |reason: String| FormatError::BadFrame { object: object.to_string(), pgno, reason };
        let opened;
        let compressed = match &self.cipher {
            None => payload,
            Some((cipher, _)) => {
                if payload.len() < NONCE_SIZE + TAG_SIZE {
                    return Err(bad(format!(
                        "sealed payload of {} bytes is shorter than nonce and tag",
                        payload.len()
                    )));
                }
                let (nonce, sealed) = payload.split_at(NONCE_SIZE);
                let aad = associated_data(self.generation, pgno);
                opened =
                    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad }).map_err(|_| {
                        bad("authentication failed: the frame was altered or belongs to another page or database"
                            .into())
                    })?;
                &opened[..]
            }
        };
        let written =
            self.decompressor.decompress_to_buffer(compressed, page).map_err(|e| bad(format!("zstd: {e}")))?;
        if written != page.len() {
            return Err(bad(format!("decompressed to {written} bytes, expected a page of {}", page.len())));
        }
        Ok(())
    }
}

fn zstd_contexts(
    generation: GenerationId,
    compression: Compression,
) -> Result<(zstd::bulk::Compressor<'static>, zstd::bulk::Decompressor<'static>), FormatError> {
    let zstd_error = |e: std::io::Error| FormatError::Misuse {
        object: generation.to_string(),
        reason: format!("initialise zstd: {e}"),
    };
    let mut compressor = zstd::bulk::Compressor::new(compression.level).map_err(zstd_error)?;
    compressor.include_checksum(true).map_err(zstd_error)?;
    compressor.include_contentsize(true).map_err(zstd_error)?;
    let decompressor = zstd::bulk::Decompressor::new().map_err(zstd_error)?;
    Ok((compressor, decompressor))
}

fn associated_data(generation: GenerationId, pgno: PageNo) -> [u8; 20] {
    let mut aad = [0u8; 20];
    aad[..16].copy_from_slice(&generation.0);
    aad[16..].copy_from_slice(&pgno.0.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation() -> GenerationId {
        GenerationId([9; 16])
    }

    #[test]
    fn plain_and_sealed_pages_round_trip() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        for key in [None, Some(EncryptionKey::from_bytes([5; 32]))] {
            let mut codec = PageCodec::new(generation(), key.as_ref(), Compression::default()).unwrap();
            let payload = codec.encode_page("t", PageNo(3), &page).unwrap();
            let mut out = vec![0u8; 4096];
            codec.decode_page("t", PageNo(3), &payload, &mut out).unwrap();
            assert_eq!(out, page);
        }
    }

    #[test]
    fn a_sealed_frame_cannot_move_to_another_page() {
        let key = EncryptionKey::from_bytes([5; 32]);
        let mut codec = PageCodec::new(generation(), Some(&key), Compression::default()).unwrap();
        let payload = codec.encode_page("t", PageNo(3), &[1u8; 512]).unwrap();
        let mut out = vec![0u8; 512];
        let err = codec.decode_page("t", PageNo(4), &payload, &mut out).unwrap_err();
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }

    #[test]
    fn key_mismatch_messages_say_what_to_do() {
        let a = EncryptionKey::from_bytes([1; 32]);
        let b = EncryptionKey::from_bytes([2; 32]);
        let codec = PageCodec::new(generation(), Some(&a), Compression::default()).unwrap();
        let err = codec.check_key("l0/x", b.check()).unwrap_err().to_string();
        assert!(err.contains("wrong encryption key"), "{err}");
        let plain = PageCodec::new(generation(), None, Compression::default()).unwrap();
        let err = plain.check_key("l0/x", a.check()).unwrap_err().to_string();
        assert!(err.contains("no encryption key is configured"), "{err}");
    }
}
