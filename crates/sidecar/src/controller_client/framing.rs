//! The snapshot stream's framing, newline-delimited JSON: the body's chunks cut into lines
//! however the chunks fall, each line decoded into a [`Frame`], and each frame turned into
//! the snapshot to serve next ([`next_snapshot`]). Pure: no I/O, no clock.

use bytes::{Buf, Bytes, BytesMut};
use tollgate_api::Snapshot;
use tollgate_api::snapshot_delta::{self, DeltaError};
use tollgate_api::stream::Frame;

/// A line longer than this is not a snapshot the controller would send.
pub(super) const MAX_LINE: usize = 64 * 1024 * 1024;

/// The line not yet ended is longer than the longest the stream may carry.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LineTooLong;

/// The bytes of the stream received so far that do not make a whole line yet.
#[derive(Debug)]
pub(super) struct Lines {
    buffer: BytesMut,
    max_line: usize,
}

impl Lines {
    pub(super) fn new() -> Self {
        Self::with_max_line(MAX_LINE)
    }

    fn with_max_line(max_line: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_line,
        }
    }

    /// Adds a chunk of the body.
    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole line, without its `\n`; `None` until one is whole.
    pub(super) fn next_line(&mut self) -> Option<Bytes> {
        let end = self.buffer.iter().position(|b| *b == b'\n')?;
        let mut line = self.buffer.split_to(end + 1);
        line.truncate(end);
        Some(line.freeze())
    }

    /// Called once every whole line of a chunk is taken: fails when the line left unfinished
    /// is already too long, and otherwise gives back the memory a huge past line held.
    pub(super) fn end_of_chunk(&mut self) -> Result<(), LineTooLong> {
        if self.buffer.len() > self.max_line {
            return Err(LineTooLong);
        }
        if self.buffer.is_empty() {
            self.buffer.clear();
        } else if self.buffer.capacity() > 4 * self.buffer.len() + 65536 {
            // Keep a huge past snapshot from pinning its memory.
            let rest = self.buffer.split();
            self.buffer = BytesMut::from(rest.chunk());
        }
        Ok(())
    }
}

/// What one line says: `Ok(None)` for a blank line, an error for a line that is not a frame
/// this sidecar knows (a newer controller's, or garbage), which the stream goes on after.
pub(super) fn decode(line: &[u8]) -> Result<Option<Frame>, serde_json::Error> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(line).map(Some)
}

/// A delta this sidecar cannot apply: it reconnects for a whole snapshot.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RefusedDelta {
    #[error("a delta from version {from} came before any snapshot on this connection")]
    NoBase { from: u64 },
    #[error(transparent)]
    Refused(#[from] DeltaError),
}

/// The snapshot to serve after `frame`, given the one this connection delivered last
/// (`held`): `Ok(None)` when the frame changes nothing. A delta is applied beside `held`,
/// which stays untouched (and served) when it is refused.
pub(super) fn next_snapshot(
    held: Option<&Snapshot>,
    frame: Frame,
) -> Result<Option<Snapshot>, RefusedDelta> {
    match frame {
        Frame::Heartbeat => Ok(None),
        Frame::Snapshot { snapshot } => Ok(Some(snapshot)),
        Frame::Delta { delta } => {
            let held = held.ok_or(RefusedDelta::NoBase { from: delta.from })?;
            Ok(Some(snapshot_delta::apply(held, &delta)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_lines(lines: &mut Lines) -> Vec<Bytes> {
        std::iter::from_fn(|| lines.next_line()).collect()
    }

    #[test]
    fn lines_are_whole_however_the_chunks_fall() {
        let stream = b"{\"type\":\"heartbeat\"}\n\n{\"type\":\"heartbeat\"}\r\nlast";
        for size in 1..stream.len() {
            let mut lines = Lines::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(size) {
                lines.push(chunk);
                got.extend(all_lines(&mut lines));
                assert_eq!(lines.end_of_chunk(), Ok(()));
            }
            assert_eq!(
                got,
                [
                    &b"{\"type\":\"heartbeat\"}"[..],
                    b"",
                    b"{\"type\":\"heartbeat\"}\r"
                ],
                "chunks of {size}"
            );
            // Not ended: not a line yet.
            assert_eq!(lines.next_line(), None);
            lines.push(b"\n");
            assert_eq!(lines.next_line().as_deref(), Some(&b"last"[..]));
        }
    }

    #[test]
    fn an_unfinished_line_longer_than_the_limit_ends_the_stream() {
        let mut lines = Lines::with_max_line(8);
        lines.push(b"12345678");
        assert_eq!(lines.end_of_chunk(), Ok(()));
        lines.push(b"9");
        assert_eq!(lines.end_of_chunk(), Err(LineTooLong));

        // A long line that ends in the same chunk is whole, so it is not too long to wait for.
        let mut lines = Lines::with_max_line(8);
        lines.push(b"1234567890\nab");
        assert_eq!(lines.next_line().as_deref(), Some(&b"1234567890"[..]));
        assert_eq!(lines.end_of_chunk(), Ok(()));
    }

    #[test]
    fn the_memory_of_a_huge_line_is_given_back() {
        let mut lines = Lines::new();
        let mut huge = vec![b'x'; 1 << 20];
        huge.extend_from_slice(b"\nrest");
        lines.push(&huge);
        assert_eq!(lines.next_line().map(|l| l.len()), Some(1 << 20));
        lines.end_of_chunk().unwrap();
        assert!(
            lines.buffer.capacity() < 65536,
            "{}",
            lines.buffer.capacity()
        );
        lines.push(b"\n");
        assert_eq!(lines.next_line().as_deref(), Some(&b"rest"[..]));
    }

    #[test]
    fn lines_decode_to_frames_blank_lines_to_nothing_and_garbage_to_an_error() {
        assert_eq!(decode(b"").unwrap(), None);
        assert_eq!(decode(b" \t\r").unwrap(), None);
        assert_eq!(
            decode(b"{\"type\":\"heartbeat\"}\r").unwrap(),
            Some(Frame::Heartbeat)
        );
        let snapshot = Snapshot {
            version: 7,
            ..Default::default()
        };
        let line = tollgate_api::stream::snapshot_line(&snapshot);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        assert_eq!(decode(line).unwrap(), Some(Frame::Snapshot { snapshot }));
        assert!(decode(b"{\"type\":\"somethingNew\"}").is_err());
        assert!(decode(b"{not json").is_err());
    }
}

#[cfg(test)]
mod delta_tests {
    use tollgate_api::snapshot::{Application, Consumer};
    use tollgate_api::snapshot_delta::{Changes, Delta, DeltaError, InvalidSnapshot, diff};
    use tollgate_api::stream::Frame;

    use super::*;

    fn consumer(namespace: &str, name: &str) -> Consumer {
        serde_json::from_value(serde_json::json!({
            "namespace": namespace, "name": name, "username": name,
            "id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()),
        }))
        .unwrap()
    }

    fn application(namespace: &str, name: &str, consumer: &str, client_id: &str) -> Application {
        serde_json::from_value(serde_json::json!({
            "namespace": namespace, "name": name, "consumer": consumer, "clientId": client_id,
            "id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()),
            "redirectUris": [], "clientType": "public", "hashSecret": false,
        }))
        .unwrap()
    }

    fn first() -> Snapshot {
        Snapshot {
            version: 10,
            consumers: vec![consumer("shop", "c")],
            applications: vec![
                application("shop", "a", "c", "client-a"),
                application("shop", "b", "c", "client-b"),
            ],
            ..Snapshot::default()
        }
    }

    /// A frame as it comes off the wire: through its line.
    fn wire(frame: Frame) -> Frame {
        let line = frame.to_line();
        decode(&line[..line.len() - 1]).unwrap().unwrap()
    }

    #[test]
    fn a_delta_is_applied_to_the_snapshot_it_names() {
        let held = first();
        let mut next = Snapshot {
            version: 11,
            ..held.clone()
        };
        next.applications[1].redirect_uris = vec!["https://b.example/cb".into()];
        let delta = wire(Frame::Delta {
            delta: diff(&held, &next),
        });
        assert_eq!(next_snapshot(Some(&held), delta), Ok(Some(next)));
        assert_eq!(next_snapshot(Some(&held), Frame::Heartbeat), Ok(None));
        let whole = wire(Frame::Snapshot {
            snapshot: held.clone(),
        });
        assert_eq!(next_snapshot(None, whole), Ok(Some(held)));
    }

    #[test]
    fn a_gap_a_missing_base_or_a_bad_delta_is_refused() {
        let held = first();
        let next = Snapshot {
            version: 12,
            ..held.clone()
        };
        // A missed delta: this one goes from 11.
        let gap = Delta {
            from: 11,
            ..diff(&held, &next)
        };
        assert_eq!(
            next_snapshot(Some(&held), Frame::Delta { delta: gap.clone() }),
            Err(RefusedDelta::Refused(DeltaError::WrongBase {
                from: 11,
                current: 10
            }))
        );
        // A delta before any snapshot on this connection.
        assert_eq!(
            next_snapshot(None, Frame::Delta { delta: gap }),
            Err(RefusedDelta::NoBase { from: 11 })
        );
        // A delta that would give one client_id to two applications.
        let stolen = Delta {
            from: 10,
            version: 11,
            applications: Changes {
                put: vec![application("shop", "b", "c", "client-a")],
                removed: vec![],
            },
            ..Delta::default()
        };
        let refused = next_snapshot(Some(&held), wire(Frame::Delta { delta: stolen }));
        assert_eq!(
            refused,
            Err(RefusedDelta::Refused(DeltaError::Invalid(
                InvalidSnapshot::DuplicateClientId {
                    namespace: "shop".into()
                }
            )))
        );
        // The held snapshot is what it was.
        assert_eq!(held, first());
    }
}
