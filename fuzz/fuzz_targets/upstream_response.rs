//! Defends the sidecar's HTTP/1.1 client (`tollgate_h1::wire`): every byte of a response comes
//! from the application, which may be buggy or hostile.
//!
//! Input: `seed byte` then the bytes the application sends (see
//! `fuzz/corpus/upstream_response/`). The seed says whether the request was a HEAD (0x80) or
//! a WebSocket upgrade (0x40, and not HEAD), and the size of the pieces (0x3f). The response
//! is read twice: all at once, and in pieces of that size, as a slow socket would deliver it.
//! Invariants: no panic; both reads agree on the head, the body and the outcome; a body never
//! holds more bytes than were sent; a body of declared length that ends has exactly that
//! length; only a WebSocket upgrade is ever switched, and no byte after its 101 is taken.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tollgate_h1::wire::{Asked, Decoded, Decoder, ResponseFraming, parse_head};

/// What reading a response from `pieces` came to: the status and body, or where it failed.
#[derive(Debug, PartialEq)]
enum Outcome {
    HeadError(String),
    IncompleteHead,
    /// A 101 to a WebSocket upgrade, and how many bytes followed its head.
    Switched { after: usize },
    Body {
        status: u16,
        framing: ResponseFraming,
        body: Vec<u8>,
        result: Result<(), String>,
    },
}

fn read<'a>(mut pieces: impl Iterator<Item = &'a [u8]>, asked: Asked) -> Outcome {
    let mut buf = BytesMut::new();
    let head = loop {
        match parse_head(&mut buf, asked) {
            Err(error) => return Outcome::HeadError(error.to_string()),
            Ok(Some(head)) if head.framing == ResponseFraming::Switched => {
                assert_eq!(asked, Asked::WebSocket, "switched without an upgrade asked");
                assert_eq!(head.status.as_u16(), 101);
                let after = buf.len() + pieces.map(<[u8]>::len).sum::<usize>();
                return Outcome::Switched { after };
            }
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => break head,
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return Outcome::IncompleteHead,
            },
        }
    };
    let mut decoder = Decoder::new(head.framing);
    let mut body = Vec::new();
    let result = loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(data)) => {
                assert!(!data.is_empty(), "an empty data frame");
                body.extend_from_slice(&data);
            }
            Ok(Decoded::End) => break Ok(()),
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => break decoder.at_eof().map(|_| ()).map_err(|e| e.to_string()),
            },
            Err(error) => break Err(error.to_string()),
        }
    };
    Outcome::Body {
        status: head.status.as_u16(),
        framing: head.framing,
        body,
        result,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, sent)) = data.split_first() else {
        return;
    };
    let asked = match (seed & 0x80 != 0, seed & 0x40 != 0) {
        (true, _) => Asked::Head,
        (false, true) => Asked::WebSocket,
        (false, false) => Asked::Other,
    };
    let piece = usize::from(seed & 0x3f).max(1);

    let whole = read(std::iter::once(sent), asked);
    let in_pieces = read(sent.chunks(piece), asked);
    if let (Outcome::Switched { .. }, _) | (_, Outcome::Switched { .. }) = (&whole, &in_pieces) {
        assert_eq!(whole, in_pieces, "read whole and in pieces of {piece}");
    }
    // Errors found at different points may differ only in how much was read by then.
    if let (Outcome::Body { result: Ok(()), .. }, _) | (_, Outcome::Body { result: Ok(()), .. }) =
        (&whole, &in_pieces)
    {
        assert_eq!(whole, in_pieces, "read whole and in pieces of {piece}");
    }
    if let Outcome::Body { framing, body, result, .. } = &whole {
        assert!(body.len() <= sent.len());
        if let (ResponseFraming::Length(length), Ok(())) = (framing, result) {
            assert_eq!(body.len() as u64, *length);
        }
        if *framing == ResponseFraming::Empty {
            assert!(body.is_empty());
        }
    }
});
