//! Feeds arbitrary bytes to the segment decoder, in arbitrary chunk sizes,
//! and decodes every frame's payload with and without a key. The decoder
//! must return errors, never panic, hang or allocate without bound.
#![no_main]

use distributary_core::format::{Compression, EncryptionKey, Event, PageCodec, SegmentDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_seed, bytes)) = data.split_first() else { return };
    let chunk = usize::from(chunk_seed).max(1);
    let mut decoder = SegmentDecoder::new("fuzz.seg");
    let mut codecs = Vec::new();
    let mut page = Vec::new();
    let mut offset = 0;
    loop {
        match decoder.next_event() {
            Err(_) => return,
            Ok(Some(Event::Header(header))) => {
                page = vec![0u8; header.page_size as usize];
                let key = EncryptionKey::from_bytes([7; 32]);
                codecs.push(PageCodec::new(header.generation, None, Compression::default()).unwrap());
                codecs.push(PageCodec::new(header.generation, Some(&key), Compression::default()).unwrap());
            }
            Ok(Some(Event::Frame(frame))) => {
                for codec in &mut codecs {
                    let _ = codec.decode_page("fuzz.seg", frame.pgno, &frame.payload, &mut page);
                }
            }
            Ok(Some(Event::Trailer(_))) => {}
            Ok(None) => {
                if decoder.is_done() {
                    return;
                }
                if offset >= bytes.len() {
                    decoder.finish_input();
                    // After the end of input the decoder must decide.
                    match decoder.next_event() {
                        Ok(None) if !decoder.is_done() => panic!("decoder waits for input after its end"),
                        _ => return,
                    }
                }
                let end = (offset + chunk).min(bytes.len());
                decoder.push(&bytes[offset..end]);
                offset = end;
            }
        }
    }
});
