//! The k-way merge at the heart of compaction: a contiguous run of segments
//! becomes one, keeping the newest frame of each page and dropping pages past
//! the final database size. Frames are copied as bytes (never decompressed or
//! decrypted), so the compactor needs no key. Memory holds one frame and one
//! small read buffer per input, plus the output's page index.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};

use crate::format::{Codecs, EncodeSummary, Flags, FormatError, Frame, Header, SegmentEncoder, SegmentReader};
use crate::ids::PageNo;

/// Why a merge was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// No inputs.
    #[error("merge segments: no inputs")]
    Empty,
    /// Two consecutive inputs do not fit together.
    #[error("merge segments: {earlier} and {later} cannot be merged: {reason}")]
    Incompatible {
        /// The earlier input's name.
        earlier: String,
        /// The later input's name.
        later: String,
        /// What differs (TXID gap, page size, database identity, key, checksum chain).
        reason: String,
    },
    /// An input is corrupt, or writing the output failed.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// Merges `inputs` (oldest first, each a verified reader positioned after
/// its header) into a segment named `object` written to `out`.
///
/// The result covers `[first.min_txid, last.max_txid]`, has the first
/// input's pre-apply checksum and the last input's post-apply checksum and
/// timestamp, and is a snapshot when the first input is one. Every input is
/// read to its end and verified (file checksum, and each input's post-apply
/// checksum equal to the next one's pre-apply checksum) before `Ok` is
/// returned: an `Err` means the output must be discarded.
pub fn merge<R: Read, W: Write>(
    object: &str,
    mut inputs: Vec<SegmentReader<R>>,
    out: W,
) -> Result<(W, EncodeSummary), MergeError> {
    let header = merged_header(&inputs)?;
    let mut encoder = SegmentEncoder::new(object, header.clone(), out)?;

    // Min-heap on page number; among equal pages the newest input (highest
    // index) pops first.
    let mut heap: BinaryHeap<Reverse<(PageNo, Reverse<usize>)>> = BinaryHeap::with_capacity(inputs.len());
    let mut current: Vec<Option<Frame>> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter_mut().enumerate() {
        let frame = input.next_frame()?;
        if let Some(frame) = &frame {
            heap.push(Reverse((frame.pgno, Reverse(i))));
        }
        current.push(frame);
    }

    while let Some(Reverse((pgno, Reverse(newest)))) = heap.pop() {
        let frame = current[newest].take().expect("a heap entry always has its frame");
        if pgno.0 <= header.commit {
            encoder.write_frame(pgno, &frame.payload)?;
        }
        advance(&mut inputs, &mut current, &mut heap, newest)?;
        // Older versions of the same page are skipped.
        while let Some(Reverse((next_pgno, Reverse(older)))) = heap.peek().copied() {
            if next_pgno != pgno {
                break;
            }
            heap.pop();
            current[older] = None;
            advance(&mut inputs, &mut current, &mut heap, older)?;
        }
    }

    // All inputs are now fully read, so their trailers are verified.
    let mut trailers = Vec::with_capacity(inputs.len());
    for input in &inputs {
        trailers.push(*input.trailer().expect("an input whose frames ran out has its trailer"));
    }
    for (pair, window) in inputs.windows(2).zip(trailers.windows(2)) {
        let (earlier, later) = (&pair[0], &pair[1]);
        if window[0].post_apply_checksum != later.header().pre_apply_checksum {
            return Err(MergeError::Incompatible {
                earlier: earlier.object().to_string(),
                later: later.object().to_string(),
                reason: format!(
                    "checksum chain broken: post-apply {} != pre-apply {}",
                    window[0].post_apply_checksum,
                    later.header().pre_apply_checksum
                ),
            });
        }
    }
    let post_apply_checksum = trailers.last().expect("at least one input").post_apply_checksum;
    Ok(encoder.finish(post_apply_checksum)?)
}

fn advance<R: Read>(
    inputs: &mut [SegmentReader<R>],
    current: &mut [Option<Frame>],
    heap: &mut BinaryHeap<Reverse<(PageNo, Reverse<usize>)>>,
    i: usize,
) -> Result<(), FormatError> {
    if let Some(frame) = inputs[i].next_frame()? {
        heap.push(Reverse((frame.pgno, Reverse(i))));
        current[i] = Some(frame);
    }
    Ok(())
}

/// The header of the merge of `inputs`, after checking they form one
/// contiguous run of one database.
fn merged_header<R: Read>(inputs: &[SegmentReader<R>]) -> Result<Header, MergeError> {
    let (first, last) = match (inputs.first(), inputs.last()) {
        (Some(first), Some(last)) => (first.header(), last.header()),
        _ => return Err(MergeError::Empty),
    };
    for pair in inputs.windows(2) {
        let (a, b) = (pair[0].header(), pair[1].header());
        let reason = if a.generation != b.generation {
            Some(format!("different generations {} and {}", a.generation, b.generation))
        } else if a.page_size != b.page_size {
            Some(format!("different page sizes {} and {}", a.page_size, b.page_size))
        } else if a.key_check != b.key_check {
            Some(format!("sealed with different keys ({} and {})", a.key_check, b.key_check))
        } else if b.min_txid != a.max_txid.next() {
            Some(format!(
                "TXID ranges {} and {} are not contiguous (expected the later one to start at {})",
                a.range(),
                b.range(),
                a.max_txid.next()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(MergeError::Incompatible {
                earlier: pair[0].object().to_string(),
                later: pair[1].object().to_string(),
                reason,
            });
        }
    }
    let snapshot = if first.flags.snapshot() { Flags::SNAPSHOT } else { 0 };
    let encrypted = first.flags.0 & Flags::ENCRYPTED;
    Ok(Header {
        flags: Flags(snapshot | encrypted),
        page_size: first.page_size,
        commit: last.commit,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        pre_apply_checksum: first.pre_apply_checksum,
        generation: first.generation,
        key_check: first.key_check,
        compression: Codecs::union_of(inputs.iter().map(|input| input.header().compression)),
    })
}
