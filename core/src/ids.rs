//! Newtypes for the numbers that flow through every layer: transaction ids,
//! page numbers, checksums and generation ids. Each prints the way it appears
//! in object keys and logs, so a value can be grepped from one to the other.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A transaction id: the position of a committed SQLite transaction in its
/// generation's log. The first transaction of a generation is 1; 0 means
/// "before anything" (an empty database).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxId(pub u64);

impl TxId {
    /// The state before the first transaction of a generation.
    pub const ZERO: TxId = TxId(0);

    /// The id that follows this one.
    ///
    /// # Panics
    /// Never in practice: a database would need 2^64 transactions.
    pub fn next(self) -> TxId {
        TxId(self.0.checked_add(1).expect("transaction id overflow"))
    }

    /// The id that precedes this one, or `None` for zero.
    pub fn prev(self) -> Option<TxId> {
        self.0.checked_sub(1).map(TxId)
    }

    /// Parses the 16-hex-digit form used in object keys.
    pub fn from_hex(text: &str) -> Option<TxId> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(TxId)
    }
}

/// Prints as 16 lowercase hex digits so that keys sort in TXID order.
impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A SQLite page number. Page 1 is the first page of the file; 0 is never a
/// valid page (the segment format uses it as the end-of-frames marker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PageNo(pub u32);

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A rolling database checksum (see [`crate::checksum`]). Prints as 16 hex
/// digits; serialised in JSON as that string, because JSON numbers lose
/// precision past 2^53 in most readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checksum(pub u64);

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Checksum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16)
            .map(Checksum)
            .map_err(|_| serde::de::Error::custom(format!("invalid checksum {text:?}: expected 16 hex digits")))
    }
}

/// The identity of a lineage of the database: 48 bits of milliseconds since
/// the Unix epoch followed by 80 random bits, so ids sort by creation time and
/// two primaries never collide. Prints as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenerationId(pub [u8; 16]);

impl GenerationId {
    /// A new id for a lineage created at `unix_ms`, with fresh random bits.
    pub fn new(unix_ms: u64) -> Result<GenerationId, std::io::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes[6..])
            .map_err(|e| std::io::Error::other(format!("draw random bits for a generation id: {e}")))?;
        bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        Ok(GenerationId(bytes))
    }

    /// Milliseconds since the Unix epoch at which the lineage was created.
    pub fn created_ms(&self) -> u64 {
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(ms)
    }
}

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Error for a string that is not a generation id.
#[derive(Debug, thiserror::Error)]
#[error("invalid generation id {0:?}: expected 32 lowercase hex digits")]
pub struct InvalidGenerationId(pub String);

impl FromStr for GenerationId {
    type Err = InvalidGenerationId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidGenerationId(text.to_string());
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(GenerationId(bytes))
    }
}

impl Serialize for GenerationId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for GenerationId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_prints_sortable_hex_and_parses_back() {
        assert_eq!(TxId(0x41).to_string(), "0000000000000041");
        assert_eq!(TxId::from_hex("0000000000000041"), Some(TxId(0x41)));
        assert_eq!(TxId::from_hex("41"), None);
        assert_eq!(TxId::from_hex("000000000000004A"), None, "uppercase is not a key we write");
    }

    #[test]
    fn generation_ids_sort_by_creation_time() {
        let older = GenerationId::new(1_000).unwrap();
        let newer = GenerationId::new(2_000).unwrap();
        assert!(older < newer);
        assert!(older.to_string() < newer.to_string());
        assert_eq!(newer.created_ms(), 2_000);
        assert_eq!(newer.to_string().parse::<GenerationId>().unwrap(), newer);
        assert!("xyz".parse::<GenerationId>().is_err());
    }

    #[test]
    fn checksum_round_trips_through_json_as_hex() {
        let json = serde_json::to_string(&Checksum(u64::MAX)).unwrap();
        assert_eq!(json, "\"ffffffffffffffff\"");
        assert_eq!(serde_json::from_str::<Checksum>(&json).unwrap(), Checksum(u64::MAX));
    }
}
