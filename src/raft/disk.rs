//! Byte layouts of log entries and snapshots, on disk and (for snapshots)
//! on the wire to followers.
//!
//! Objects go through the store's [`Codec`] (so a later issue can encrypt
//! secrets); the frame around them is a small hand-written binary layout,
//! because sealed bytes are not text and JSON arrays of numbers would
//! triple their size.

use crate::raft::{Batch, RaftError, TypeConfig};
use crate::store::{decode_object, encode_object, Codec, Op, Transaction};
use crate::types::{Kind, Object, Timestamp};
use openraft::{BasicNode, Entry, EntryPayload, LogId, Membership};
use serde::{Deserialize, Serialize};

const ENTRY_FORMAT: u8 = 1;
const SNAPSHOT_FORMAT: u8 = 1;

#[derive(Serialize, Deserialize)]
enum Header {
    Blank(LogId<u64>),
    Membership(LogId<u64>, Membership<u64, BasicNode>),
    Normal(LogId<u64>),
}

const OP_CREATE: u8 = 0;
const OP_UPDATE: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_UNCHANGED: u8 = 3;

pub fn encode_entry(codec: &dyn Codec, entry: &Entry<TypeConfig>) -> Result<Vec<u8>, RaftError> {
    let mut w = Writer(vec![ENTRY_FORMAT]);
    let header = match &entry.payload {
        EntryPayload::Blank => Header::Blank(entry.log_id),
        EntryPayload::Membership(m) => Header::Membership(entry.log_id, m.clone()),
        EntryPayload::Normal(_) => Header::Normal(entry.log_id),
    };
    w.bytes(&serde_json::to_vec(&header)?);
    if let EntryPayload::Normal(batch) = &entry.payload {
        w.u64(batch.0.len() as u64);
        for tx in &batch.0 {
            encode_tx(codec, &mut w, tx)?;
        }
    }
    Ok(w.0)
}

fn encode_tx(codec: &dyn Codec, w: &mut Writer, tx: &Transaction) -> Result<(), RaftError> {
    w.u64(tx.at.secs as u64);
    w.u64(u64::from(tx.at.nanos));
    w.u64(tx.ops.len() as u64);
    for op in &tx.ops {
        encode_op(codec, w, op)?;
    }
    Ok(())
}

fn decode_tx(codec: &dyn Codec, r: &mut Reader) -> Result<Transaction, RaftError> {
    let secs = r.u64()? as i64;
    let nanos = u32::try_from(r.u64()?).map_err(|e| RaftError::corrupt("log entry", e))?;
    let mut tx = Transaction::new(Timestamp { secs, nanos });
    for _ in 0..r.u64()? {
        tx.ops.push(decode_op(codec, r)?);
    }
    Ok(tx)
}

fn encode_op(codec: &dyn Codec, w: &mut Writer, op: &Op) -> Result<(), RaftError> {
    match op {
        Op::Create(o) => {
            w.u8(OP_CREATE);
            w.u8(o.kind().slot() as u8);
            w.bytes(&encode_object(codec, o)?);
        }
        Op::Update { object, expected } => {
            w.u8(OP_UPDATE);
            w.u8(object.kind().slot() as u8);
            w.u64(*expected);
            w.bytes(&encode_object(codec, object)?);
        }
        Op::Delete { kind, id, expected } => {
            w.u8(OP_DELETE);
            w.u8(kind.slot() as u8);
            w.u8(u8::from(expected.is_some()));
            w.u64(expected.unwrap_or(0));
            w.bytes(id.as_bytes());
        }
        Op::Unchanged { kind, since } => {
            w.u8(OP_UNCHANGED);
            w.u8(kind.slot() as u8);
            w.u64(*since);
        }
    }
    Ok(())
}

pub fn decode_entry(codec: &dyn Codec, bytes: &[u8]) -> Result<Entry<TypeConfig>, RaftError> {
    let mut r = Reader::new(bytes, "log entry");
    if r.u8()? != ENTRY_FORMAT {
        return Err(RaftError::corrupt("log entry", "unknown format"));
    }
    let header: Header = serde_json::from_slice(r.bytes()?)?;
    let (log_id, payload) = match header {
        Header::Blank(id) => (id, EntryPayload::Blank),
        Header::Membership(id, m) => (id, EntryPayload::Membership(m)),
        Header::Normal(id) => {
            let mut txs = Vec::new();
            for _ in 0..r.u64()? {
                txs.push(decode_tx(codec, &mut r)?);
            }
            (id, EntryPayload::Normal(Batch(txs)))
        }
    };
    Ok(Entry { log_id, payload })
}

fn decode_op(codec: &dyn Codec, r: &mut Reader) -> Result<Op, RaftError> {
    let tag = r.u8()?;
    let kind = r.kind()?;
    let op = match tag {
        OP_CREATE => Op::Create(decode_object(codec, kind, r.bytes()?.to_vec())?),
        OP_UPDATE => {
            let expected = r.u64()?;
            let object = decode_object(codec, kind, r.bytes()?.to_vec())?;
            Op::Update { object, expected }
        }
        OP_DELETE => {
            let has_expected = r.u8()? != 0;
            let expected = r.u64()?;
            let id = String::from_utf8(r.bytes()?.to_vec())
                .map_err(|e| RaftError::corrupt("log entry", e))?;
            Op::Delete {
                kind,
                id,
                expected: has_expected.then_some(expected),
            }
        }
        OP_UNCHANGED => Op::Unchanged {
            kind,
            since: r.u64()?,
        },
        other => return Err(RaftError::corrupt("log entry", format!("op tag {other}"))),
    };
    Ok(op)
}

/// The whole store at `index`: every object, sealed.
pub fn encode_snapshot<'a>(
    codec: &dyn Codec,
    index: u64,
    objects: impl ExactSizeIterator<Item = &'a Object>,
) -> Result<Vec<u8>, RaftError> {
    let mut w = Writer(vec![SNAPSHOT_FORMAT]);
    w.u64(index);
    w.u64(objects.len() as u64);
    for o in objects {
        w.u8(o.kind().slot() as u8);
        w.bytes(&encode_object(codec, o)?);
    }
    Ok(w.0)
}

pub fn decode_snapshot(codec: &dyn Codec, bytes: &[u8]) -> Result<(u64, Vec<Object>), RaftError> {
    let mut r = Reader::new(bytes, "snapshot");
    if r.u8()? != SNAPSHOT_FORMAT {
        return Err(RaftError::corrupt("snapshot", "unknown format"));
    }
    let index = r.u64()?;
    let n = r.u64()?;
    // Cap the preallocation: `n` comes from disk or a peer.
    let mut objects = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let kind = r.kind()?;
        objects.push(decode_object(codec, kind, r.bytes()?.to_vec())?);
    }
    Ok((index, objects))
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RaftError> {
        if self.buf.len() < n {
            return Err(RaftError::corrupt(self.what, "truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RaftError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, RaftError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn bytes(&mut self) -> Result<&'a [u8], RaftError> {
        let n = usize::try_from(self.u64()?).map_err(|e| RaftError::corrupt(self.what, e))?;
        self.take(n)
    }

    fn kind(&mut self) -> Result<Kind, RaftError> {
        let k = self.u8()?;
        Kind::ALL
            .get(usize::from(k))
            .copied()
            .ok_or_else(|| RaftError::corrupt(self.what, format!("kind {k}")))
    }
}
