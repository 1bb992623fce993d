//! Serialisers: how call arguments, results and events become bytes.
//!
//! Every message is a serde value; the [`Codec`] chosen for a handle turns it
//! into bytes, the same way in parent and child:
//!
//! | codec | crate | carries | choose it when |
//! |---|---|---|---|
//! | [`Codec::Raw`] (default for names) | none | a flat list of octet strings (Perl's `STRING_SERIALISER`) | messages are a few strings or numbers; Perl's format |
//! | [`Codec::Cbor`] (default for function values) | cbor4ii (feature `cbor`) | any serde value | structured data; compact, fast |
//! | [`Codec::Json`] | serde_json (feature `json`) | any serde value | structured data, readable on the wire |
//! | [`Codec::Postcard`] | postcard (feature `postcard`) | any serde value | structured data; the most compact, both sides the same types |
//!
//! File descriptors travel beside the bytes (`SCM_RIGHTS`), named inside a
//! message by [`Fd`] values, with any codec.
//!
//! Whatever the codec, a decoded message may take at most 1 MiB plus 32
//! times its encoded size of memory (counting every element of a
//! collection at its size, and every string): a message that would take
//! more (a large type behind a one-byte enum variant, millions of empty
//! lists) is refused with a [`CodecError`] instead of taking the process's
//! memory. Realistic messages stay far below it: a list of one-character
//! strings, the worst common case, takes about 25 times its encoding.

use std::fmt;
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::budget::Within;
use super::byte_sequences::Bytewise;
use super::fd;
#[cfg(any(doc, test))]
use super::fd::Fd;
use super::raw;
use super::shared_memory::Sink;

/// How messages are encoded. Parent and child must use the same one; the
/// child checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// A flat list of octet strings, each a BER length and the bytes; the
    /// Perl module's default. See the [`raw`](super::raw) module for what it
    /// can carry.
    #[default]
    Raw,
    /// CBOR (RFC 8949) with cbor4ii. Needs the `cbor` feature.
    Cbor,
    /// JSON with serde_json. Needs the `json` feature.
    Json,
    /// postcard. Needs the `postcard` feature.
    Postcard,
}

impl Codec {
    /// The codec of a handle whose function has typed messages (a function
    /// value, or a name after [`RpcBuilder::types`](crate::rpc::RpcBuilder::types))
    /// when none is chosen: one that carries any serde value, so that a
    /// `#[derive(Serialize, Deserialize)]` struct simply works. CBOR with
    /// the default features (as fast as [`Codec::Raw`] for small calls;
    /// see `anyfork bench rpc`), else postcard, else JSON; [`Codec::Raw`]
    /// only when none of them is compiled in.
    pub const TYPED_DEFAULT: Codec = if cfg!(feature = "cbor") {
        Codec::Cbor
    } else if cfg!(feature = "postcard") {
        Codec::Postcard
    } else if cfg!(feature = "json") {
        Codec::Json
    } else {
        Codec::Raw
    };
}

/// Encoding or decoding a message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{codec} codec: {message}")]
pub struct CodecError {
    codec: &'static str,
    message: String,
}

impl CodecError {
    /// The codec's name (as [`Codec::name`] gives it).
    pub fn codec(&self) -> &'static str {
        self.codec
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A message as bytes plus the descriptors it names.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The encoded message.
    pub bytes: Vec<u8>,
    /// Descriptors, in the order the message's [`Fd`] values index them.
    pub fds: Vec<OwnedFd>,
}

impl Codec {
    /// The codec's name on the wire and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Cbor => "cbor",
            Codec::Json => "json",
            Codec::Postcard => "postcard",
        }
    }

    /// The codec with this name.
    pub fn from_name(name: &str) -> Option<Codec> {
        [Codec::Raw, Codec::Cbor, Codec::Json, Codec::Postcard]
            .into_iter()
            .find(|c| c.name() == name)
    }

    fn error(self, message: impl fmt::Display) -> CodecError {
        CodecError {
            codec: self.name(),
            message: message.to_string(),
        }
    }

    /// Encodes `value`, collecting the descriptors of its [`Fd`]s.
    ///
    /// ```
    /// use anyfork::rpc::Codec;
    /// let encoded = Codec::Raw.encode(&("add", 1, 2))?;
    /// let (name, a, b): (String, i32, i32) = Codec::Raw.decode(&encoded.bytes, encoded.fds)?;
    /// assert_eq!((name.as_str(), a + b), ("add", 3));
    /// # Ok::<(), anyfork::rpc::CodecError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// When the value cannot be encoded (the raw codec's limits, a codec
    /// whose feature is not compiled in, a descriptor that cannot be
    /// duplicated).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Encoded, CodecError> {
        let mut bytes = Vec::new();
        let fds = self.encode_appending(value, &mut bytes)?;
        Ok(Encoded { bytes, fds })
    }

    /// [`encode`](Self::encode), appending to `out` (a buffer kept from
    /// call to call, so that large messages do not each need fresh
    /// memory). On an error `out` is as it was.
    pub(crate) fn encode_appending<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<Vec<OwnedFd>, CodecError> {
        let had = out.len();
        let (result, fds) = fd::collecting(|| self.encode_into(value, out));
        if result.is_err() {
            out.truncate(had);
        }
        result.map(|()| fds)
    }

    fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let mut sink = Sink::inline(out);
        match self.encode_to(value, &mut sink) {
            Ok(()) => {
                sink.finish();
                Ok(())
            }
            Err(e) => {
                sink.abandon();
                Err(e)
            }
        }
    }

    /// Encodes into an RPC frame's sink (which may move a large message
    /// to shared memory), collecting the descriptors of its [`Fd`]s. On an
    /// error the caller abandons the sink.
    pub(crate) fn encode_to_sink<T: Serialize + ?Sized>(
        self,
        value: &T,
        sink: &mut Sink<'_, '_>,
    ) -> Result<Vec<OwnedFd>, CodecError> {
        let (result, fds) = fd::collecting(|| self.encode_to(value, sink));
        result.map(|()| fds)
    }

    fn encode_to<T: Serialize + ?Sized>(
        self,
        value: &T,
        sink: &mut Sink<'_, '_>,
    ) -> Result<(), CodecError> {
        // Byte sequences as byte strings (see `byte_sequences`).
        let value = &Bytewise(value);
        match self {
            Codec::Raw => raw::to_output(value, sink).map_err(|e| self.error(e.message())),
            #[cfg(feature = "cbor")]
            Codec::Cbor => value
                .serialize(&mut cbor4ii::serde::Serializer::new(CborSink(sink)))
                .map_err(|e| self.error(super::cbor_errors::Encoding(e))),
            #[cfg(feature = "json")]
            Codec::Json => serde_json::to_writer(sink, value).map_err(|e| self.error(e)),
            #[cfg(feature = "postcard")]
            Codec::Postcard => postcard::serialize_with_flavor(value, PostcardSink(sink))
                .map_err(|e| self.error(e)),
            #[allow(unreachable_patterns)]
            other => Err(other.not_compiled()),
        }
    }

    /// Decodes a value, giving its [`Fd`]s the descriptors that came with it.
    ///
    /// # Errors
    ///
    /// When the bytes are not a valid encoding of `T`, or name descriptors
    /// that did not arrive.
    pub fn decode<T: DeserializeOwned>(
        self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<T, CodecError> {
        fd::providing(fds, || self.decode_from(bytes))
    }

    fn decode_from<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        // What the message may take, decoded: see `budget`.
        let limit = super::budget::for_message(bytes.len());
        match super::budget::within(limit, || self.decode_within::<T>(bytes)) {
            (_, Some(why)) => Err(self.error(why)),
            (result, None) => result,
        }
    }

    /// Decodes through the budget's deserializer ([`Within`]).
    fn decode_within<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Raw => raw::from_bytes::<Within<T>>(bytes)
                .map(Within::into_inner)
                .map_err(|e| self.error(e.message())),
            // cbor4ii asked for a byte string accepts only one: a `Vec<u8>`
            // written as an array of numbers is read as what it is.
            #[cfg(feature = "cbor")]
            Codec::Cbor => cbor4ii::serde::from_slice::<Within<T, true>>(bytes)
                .map(Within::into_inner)
                .map_err(|e| self.error(super::cbor_errors::Decoding(e))),
            #[cfg(feature = "json")]
            Codec::Json => serde_json::from_slice::<Within<T>>(bytes)
                .map(Within::into_inner)
                .map_err(|e| self.error(e)),
            #[cfg(feature = "postcard")]
            Codec::Postcard => postcard::from_bytes::<Within<T>>(bytes)
                .map(Within::into_inner)
                .map_err(|e| self.error(e)),
            #[allow(unreachable_patterns)]
            other => Err(other.not_compiled()),
        }
    }

    #[allow(dead_code)]
    fn not_compiled(self) -> CodecError {
        self.error(format!(
            "anyfork was compiled without the `{}` feature",
            self.name()
        ))
    }
}

/// cbor4ii's output into a [`Sink`]. (Decoding needs no adapter: cbor4ii
/// reads a byte or text string straight from the message, so a large one
/// is copied once, into the value.)
#[cfg(feature = "cbor")]
struct CborSink<'s, 'a, 'r>(&'s mut Sink<'a, 'r>);

#[cfg(feature = "cbor")]
impl cbor4ii::core::enc::Write for CborSink<'_, '_, '_> {
    type Error = std::convert::Infallible;

    fn push(&mut self, input: &[u8]) -> Result<(), Self::Error> {
        self.0.extend_from_slice(input);
        Ok(())
    }
}

/// postcard's output into a [`Sink`].
#[cfg(feature = "postcard")]
struct PostcardSink<'s, 'a, 'r>(&'s mut Sink<'a, 'r>);

#[cfg(feature = "postcard")]
impl postcard::ser_flavors::Flavor for PostcardSink<'_, '_, '_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A name that is no codec's (see [`Codec::from_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no codec is called {name:?} (raw, cbor, json, postcard)")]
pub struct UnknownCodec {
    name: String,
}

impl UnknownCodec {
    /// The name that was asked for.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Parses a codec's name, as [`Codec::name`] writes it.
///
/// ```
/// use anyfork::rpc::Codec;
/// assert_eq!("cbor".parse::<Codec>()?, Codec::Cbor);
/// assert!("yaml".parse::<Codec>().is_err());
/// # Ok::<(), anyfork::rpc::UnknownCodec>(())
/// ```
impl std::str::FromStr for Codec {
    type Err = UnknownCodec;

    fn from_str(name: &str) -> Result<Codec, UnknownCodec> {
        Codec::from_name(name).ok_or_else(|| UnknownCodec {
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Job {
        id: u32,
        path: String,
        tags: Vec<String>,
    }

    /// The structured codecs compiled in.
    fn codecs() -> Vec<Codec> {
        [Codec::Cbor, Codec::Json, Codec::Postcard]
            .into_iter()
            .filter(|c| c.encode(&1u8).is_ok())
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Messages of every codec, framed, survive any split of the byte
        /// stream: frames and then values come back as they were sent.
        #[test]
        fn messages_of_every_codec_round_trip_through_frames_under_any_split(
            jobs in proptest::collection::vec(
                (proptest::prelude::any::<u32>(), ".{0,40}", proptest::collection::vec(".{0,8}", 0..4)),
                1..8,
            ),
            cuts in proptest::collection::vec(0usize..4000, 0..20),
        ) {
            use crate::proto::Outbox;
            use super::super::frame::{self, Decoder, TO_PARENT, kind};
            let jobs: Vec<Job> = jobs
                .into_iter()
                .map(|(id, path, tags)| Job { id, path, tags })
                .collect();
            let mut all = codecs();
            all.push(Codec::Raw);
            for codec in all {
                let mut out = Outbox::default();
                for (n, job) in jobs.iter().enumerate() {
                    // The raw codec carries flat lists of strings only.
                    let encoded = if codec == Codec::Raw {
                        codec.encode(&(job.id, &job.path)).unwrap()
                    } else {
                        codec.encode(job).unwrap()
                    };
                    frame::encode(&mut out, n as u32 + 1, kind::REPLY, &encoded.bytes, encoded.fds)
                        .unwrap();
                }
                let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                out.send_all(&crate::transport::Transport::Socket(a.try_clone().unwrap().into())).unwrap();
                drop(a);
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut &b, &mut bytes).unwrap();
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                cuts.push(bytes.len());
                cuts.sort();
                let mut decoder = Decoder::new(TO_PARENT, 1 << 20, 16);
                let mut from = 0;
                let mut n = 0;
                for cut in cuts {
                    decoder.feed(&bytes[from..cut], std::iter::empty());
                    from = cut;
                    while let Some(frame) = decoder.next().unwrap() {
                        proptest::prop_assert_eq!(frame.id, n as u32 + 1);
                        let job = &jobs[n];
                        if codec == Codec::Raw {
                            let back: (u32, String) = codec.decode(&frame.payload, frame.fds).unwrap();
                            proptest::prop_assert_eq!(back, (job.id, job.path.clone()));
                        } else {
                            let back: Job = codec.decode(&frame.payload, frame.fds).unwrap();
                            proptest::prop_assert_eq!(&back, job);
                        }
                        n += 1;
                    }
                }
                decoder.at_end().unwrap();
                proptest::prop_assert_eq!(n, jobs.len(), "{} lost frames", codec);
            }
        }
    }

    #[test]
    fn structured_values_round_trip() {
        let job = Job {
            id: 7,
            path: "/tmp/x".into(),
            tags: vec!["a".into(), "b".into()],
        };
        for codec in codecs() {
            let encoded = codec.encode(&job).unwrap();
            assert_eq!(
                codec.decode::<Job>(&encoded.bytes, encoded.fds).unwrap(),
                job,
                "{codec}"
            );
        }
        // The raw codec refuses the nested list, with a reason.
        assert!(
            Codec::Raw
                .encode(&job)
                .unwrap_err()
                .message
                .contains("nested")
        );
    }

    #[test]
    fn descriptors_travel_with_every_codec() {
        for codec in [Codec::Raw].into_iter().chain(codecs()) {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let encoded = codec.encode(&("two", Fd::new(a), Fd::new(b))).unwrap();
            assert_eq!(encoded.fds.len(), 2, "{codec}");
            let (_, x, y): (String, Fd, Fd) = codec.decode(&encoded.bytes, encoded.fds).unwrap();
            assert_ne!(
                std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&x)),
                std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&y))
            );
        }
    }

    #[test]
    fn a_missing_descriptor_is_an_error() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let encoded = Codec::Raw.encode(&(Fd::new(a),)).unwrap();
        let err = Codec::Raw
            .decode::<(Fd,)>(&encoded.bytes, Vec::new())
            .unwrap_err();
        assert!(err.message.contains("did not arrive"), "{err}");
    }

    /// A large type behind a small encoding: each `Small` is a few bytes
    /// on the wire and 8 kB in a `Vec`.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[allow(clippy::large_enum_variant)] // the point of the test
    enum Big {
        Small,
        Large([[u64; 32]; 32]),
    }

    #[test]
    fn a_message_that_would_expand_past_the_budget_is_refused_by_every_codec() {
        let many = vec![Big::Small; 2000];
        for codec in [Codec::Raw].into_iter().chain(codecs()) {
            let encoded = codec.encode(&many).unwrap();
            let err = match codec.decode::<Vec<Big>>(&encoded.bytes, encoded.fds) {
                Ok(all) => panic!("{codec}: {} elements of 8 kB decoded", all.len()),
                Err(err) => err,
            };
            assert!(
                err.message.contains("would take more than"),
                "{codec}: {err}"
            );
            // A few of them are fine.
            let few = vec![Big::Small; 4];
            let encoded = codec.encode(&few).unwrap();
            assert_eq!(
                codec
                    .decode::<Vec<Big>>(&encoded.bytes, encoded.fds)
                    .unwrap(),
                few
            );
        }
    }

    #[test]
    fn many_small_strings_fit_the_budget_in_every_codec() {
        let strings: Vec<String> = (0..100_000).map(|i| (i % 10).to_string()).collect();
        for codec in [Codec::Raw].into_iter().chain(codecs()) {
            let encoded = codec.encode(&strings).unwrap();
            let back: Vec<String> = codec.decode(&encoded.bytes, encoded.fds).unwrap();
            assert_eq!(back, strings, "{codec}");
        }
    }

    #[test]
    fn names_round_trip() {
        for codec in [Codec::Raw, Codec::Cbor, Codec::Json, Codec::Postcard] {
            assert_eq!(Codec::from_name(codec.name()), Some(codec));
        }
    }
}
