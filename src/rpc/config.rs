//! What the parent tells the RPC server: sent as the last argument before
//! `run`, the way the Perl module sends its ten arguments.
//!
//! ```text
//! "anyfork-rpc/1"        magic and version
//! u8                     codec (see Codec::name order: raw, cbor, json, postcard)
//! u8                     backend: 0 look it up by name, 1 sync value, 2 async value
//! u32 + target           the function (a run target, see crate::proto)
//! u32 + target | u32 0   init, or none
//! u32 + target | u32 0   done, or none
//! u32                    buflen_req: first read buffer size
//! u64                    largest frame accepted
//! u8                     tracing level to forward: 0 off, 1 error .. 5 trace
//! u64                    shared memory: the largest region each side may
//!                        make for large messages, 0 for none (see
//!                        crate::rpc::shared_memory)
//! ```

use crate::proto::{self, ProtocolError, Tag, Target};

use super::codec::Codec;
use super::function::Backend;

const MAGIC: &[u8] = b"anyfork-rpc/2";
const CODECS: [Codec; 4] = [Codec::Raw, Codec::Cbor, Codec::Json, Codec::Postcard];

/// The server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) codec: Codec,
    pub(crate) backend: Backend,
    pub(crate) function: Target,
    pub(crate) init: Option<Target>,
    pub(crate) done: Option<Target>,
    pub(crate) buflen_req: u32,
    pub(crate) max_frame: u64,
    pub(crate) log_level: u8,
    pub(crate) shared_memory: u64,
}

fn put_target(out: &mut Vec<u8>, target: Option<&Target>) {
    match target {
        Some(target) => {
            let bytes = proto::encode_target(target);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        None => out.extend_from_slice(&0u32.to_be_bytes()),
    }
}

fn malformed(what: &'static str) -> ProtocolError {
    ProtocolError::Malformed {
        tag: Tag(b'a'),
        what,
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.0.len() < n {
            return Err(malformed("rpc config is cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn target(&mut self) -> Result<Option<Target>, ProtocolError> {
        let len = self.u32()? as usize;
        if len == 0 {
            return Ok(None);
        }
        proto::decode_target(b'a', self.take(len)?).map(Some)
    }
}

impl Config {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(CODECS.iter().position(|c| *c == self.codec).unwrap_or(0) as u8);
        out.push(self.backend.code());
        put_target(&mut out, Some(&self.function));
        put_target(&mut out, self.init.as_ref());
        put_target(&mut out, self.done.as_ref());
        out.extend_from_slice(&self.buflen_req.to_be_bytes());
        out.extend_from_slice(&self.max_frame.to_be_bytes());
        out.push(self.log_level);
        out.extend_from_slice(&self.shared_memory.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Config, ProtocolError> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(malformed(
                "the last argument is not an anyfork rpc config (version mismatch?)",
            ));
        }
        let codec = *CODECS
            .get(r.u8()? as usize)
            .ok_or(malformed("rpc config names an unknown codec"))?;
        let backend =
            Backend::from_code(r.u8()?).ok_or(malformed("rpc config names an unknown backend"))?;
        let function = r
            .target()?
            .ok_or(malformed("rpc config names no function"))?;
        let init = r.target()?;
        let done = r.target()?;
        let buflen_req = r.u32()?;
        let max_frame = r.u64()?;
        let log_level = r.u8()?;
        let shared_memory = r.u64()?;
        if !r.0.is_empty() {
            return Err(malformed("rpc config has bytes after its end"));
        }
        Ok(Config {
            codec,
            backend,
            function,
            init,
            done,
            buflen_req,
            max_frame,
            log_level,
            shared_memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let config = Config {
            codec: Codec::Json,
            backend: Backend::Async,
            function: Target::Name("a::b".into()),
            init: Some(Target::Offset {
                offset: 42,
                exe: [1, 2, 3, 4],
                label: "init".into(),
            }),
            done: None,
            buflen_req: 496,
            max_frame: 1 << 30,
            log_level: 3,
            shared_memory: 1 << 20,
        };
        assert_eq!(Config::decode(&config.encode()).unwrap(), config);
        assert!(Config::decode(b"nonsense").is_err());
        let mut long = config.encode();
        long.push(0);
        assert!(Config::decode(&long).is_err());
    }
}
