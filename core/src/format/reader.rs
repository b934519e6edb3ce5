//! Driving the push decoder from a blocking `std::io::Read`.

use std::io::Read;

use super::decoder::{Event, Frame, SegmentDecoder};
use super::header::{Header, Trailer};
use super::{FormatError, HEADER_SIZE};

/// Bytes read per call: small, because a merge holds one reader per input.
const CHUNK_SIZE: usize = 16 * 1024;

/// Reads a segment frame by frame from `R`, verifying it fully: the last
/// [`SegmentReader::next_frame`] returns `None` only once the trailer and
/// the file checksum check out.
pub struct SegmentReader<R: Read> {
    reader: R,
    decoder: SegmentDecoder,
    header: Header,
    trailer: Option<Trailer>,
    chunk: Vec<u8>,
}

impl<R: Read> SegmentReader<R> {
    /// Reads and validates the header of the segment `object` from `reader`.
    pub fn open(object: impl Into<String>, reader: R) -> Result<SegmentReader<R>, FormatError> {
        let mut reader = reader;
        let mut decoder = SegmentDecoder::new(object);
        let mut chunk = vec![0; CHUNK_SIZE];
        let header = match pull_event(&mut reader, &mut decoder, &mut chunk)? {
            Event::Header(header) => header,
            other => unreachable!("the decoder yields the header first, got {other:?}"),
        };
        Ok(SegmentReader { reader, decoder, header, trailer: None, chunk })
    }

    /// The segment's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The segment's name.
    pub fn object(&self) -> &str {
        self.decoder.object()
    }

    /// The next frame, or `None` once the whole segment has been verified.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FormatError> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        match pull_event(&mut self.reader, &mut self.decoder, &mut self.chunk)? {
            Event::Frame(frame) => Ok(Some(frame)),
            Event::Trailer(trailer) => {
                self.expect_end()?;
                self.trailer = Some(trailer);
                Ok(None)
            }
            Event::Header(_) => unreachable!("the decoder yields the header once"),
        }
    }

    /// Checks that nothing follows the trailer: the format ends there
    /// (docs/FORMAT.md), so extra bytes mean a damaged or foreign object.
    fn expect_end(&mut self) -> Result<(), FormatError> {
        loop {
            // The decoder refuses bytes it holds past the trailer.
            self.decoder.next_event()?;
            let read = match self.reader.read(&mut self.chunk[..1]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FormatError::Io { op: "read", object: self.decoder.object().to_string(), source });
                }
            };
            if read == 0 {
                return Ok(());
            }
            self.decoder.push(&self.chunk[..read]);
        }
    }

    /// The verified trailer, once [`SegmentReader::next_frame`] returned `None`.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// Reads the rest of the segment (verifying it) and returns the trailer.
    pub fn finish(mut self) -> Result<Trailer, FormatError> {
        while self.next_frame()?.is_some() {}
        Ok(self.trailer.expect("next_frame returned None only after the trailer"))
    }
}

/// Feeds `decoder` from `reader` until it yields an event.
fn pull_event<R: Read>(reader: &mut R, decoder: &mut SegmentDecoder, chunk: &mut [u8]) -> Result<Event, FormatError> {
    loop {
        if let Some(event) = decoder.next_event()? {
            return Ok(event);
        }
        if decoder.is_done() {
            return Err(FormatError::Misuse {
                object: decoder.object().to_string(),
                reason: "read past the trailer".into(),
            });
        }
        let want = decoder.wanted().clamp(1, chunk.len());
        let read = loop {
            match reader.read(&mut chunk[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(FormatError::Io { op: "read", object: decoder.object().to_string(), source });
                }
            }
        };
        if read == 0 {
            decoder.finish_input();
        } else {
            decoder.push(&chunk[..read]);
        }
    }
}

/// Decodes just the header from the first bytes of a segment (for example a
/// range request of its first 96 bytes), without reading the rest.
pub fn read_segment_header(object: &str, prefix: &[u8]) -> Result<Header, FormatError> {
    let Some(bytes) = prefix.get(..HEADER_SIZE) else {
        return Err(FormatError::Truncated {
            object: object.to_string(),
            offset: prefix.len() as u64,
            expected: "the header",
        });
    };
    let mut raw = [0u8; HEADER_SIZE];
    raw.copy_from_slice(bytes);
    Header::decode(&raw, object)
}

impl<R: Read> SegmentReader<R> {
    /// The next page, decoded (unsealed with `codec`'s key and decompressed)
    /// into `page`, which must be one page long; `None` once the whole
    /// segment has been verified. A codec with another key than the
    /// segment's gets [`FormatError::WrongKey`].
    pub fn next_page(
        &mut self,
        codec: &mut super::PageCodec,
        page: &mut [u8],
    ) -> Result<Option<crate::ids::PageNo>, FormatError> {
        Ok(self.next_page_hashed(codec, page)?.map(|(pgno, _)| pgno))
    }

    /// [`SegmentReader::next_page`] with the page's term in the rolling
    /// checksum ([`crate::checksum::page_hash`]), which decoding yields.
    pub fn next_page_hashed(
        &mut self,
        codec: &mut super::PageCodec,
        page: &mut [u8],
    ) -> Result<Option<(crate::ids::PageNo, u64)>, FormatError> {
        codec.check_key(self.decoder.object(), self.header.key_check)?;
        if page.len() != self.header.page_size as usize {
            return Err(FormatError::Misuse {
                object: self.decoder.object().to_string(),
                reason: format!("page buffer of {} bytes for page size {}", page.len(), self.header.page_size),
            });
        }
        let Some(frame) = self.next_frame()? else {
            return Ok(None);
        };
        let hash = codec.decode_page(self.decoder.object(), frame.pgno, &frame.payload, page)?;
        Ok(Some((frame.pgno, hash)))
    }
}
