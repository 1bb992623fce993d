//! `anyfork bench rpc`, large messages: a byte string of 256 KiB, 1 MiB
//! and 16 MiB sent and echoed back, one at a time, by
//!
//! - `raw`: the bytes written and read by hand over the socket (the
//!   floor of the socket path);
//! - anyfork's synchronous backend with CBOR and `serde_bytes::ByteBuf`,
//!   through the socket (`shared_memory(0)`) and through shared memory;
//! - `ipc-channel` (the crate `procspawn` uses): its byte channel
//!   (`IpcBytesSender`) and `IpcSharedMemory` (a fresh memfd per message);
//!
//! and, at 1 MiB, a plain `Vec<u8>` against `ByteBuf` for every codec (a
//! `Vec<u8>` is a sequence of numbers to serde, which anyfork recognises
//! and moves as one byte string).
//!
//! The cases of one payload run together, their processes taking turns in
//! short blocks of calls, with this process on CPU 0 and the children on
//! CPU 1 (see `rpc_bench`).

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyfork::rpc::Codec;
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver};
use ipc_channel::ipc::{IpcSender, IpcSharedMemory};
use serde_bytes::ByteBuf;

use crate::median::median;
use crate::rpc_bench::{
    Backend, Case, MIN_CALLS, RoundTrip, RpcBenchError, SERIALISERS, new_fork, start_error,
};

/// The payload sizes.
pub const LARGE_PAYLOADS: [usize; 3] = [256 << 10, 1 << 20, 16 << 20];

/// What a message is to serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// `serde_bytes::ByteBuf`: one byte string.
    ByteBuf,
    /// `Vec<u8>`: a sequence of numbers.
    VecU8,
}

/// How the bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Socket,
    SharedMemory,
}

impl Transport {
    /// The name in `--json`.
    pub fn key(self) -> &'static str {
        match self {
            Transport::Socket => "socket",
            Transport::SharedMemory => "shared_memory",
        }
    }
}

/// Who moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mover {
    /// By hand over the socket.
    Raw,
    /// anyfork's synchronous backend.
    Anyfork {
        codec: Codec,
        serialiser: &'static str,
        message: Message,
        transport: Transport,
    },
    /// ipc-channel's byte channel.
    IpcBytes,
    /// ipc-channel's `IpcSharedMemory`, one per message.
    IpcSharedMemory,
}

impl Mover {
    /// `backend` in `--json`.
    pub fn backend(self) -> &'static str {
        match self {
            Mover::Raw => "raw",
            Mover::Anyfork { .. } => "sync",
            Mover::IpcBytes | Mover::IpcSharedMemory => "ipc_channel",
        }
    }

    /// `serialiser` in `--json`.
    pub fn serialiser(self) -> &'static str {
        match self {
            Mover::Anyfork { serialiser, .. } => serialiser,
            _ => "none",
        }
    }

    /// `message` in `--json`.
    pub fn message(self) -> &'static str {
        match self {
            Mover::Anyfork {
                message: Message::VecU8,
                ..
            } => "Vec<u8>",
            Mover::Anyfork { .. } => "ByteBuf",
            Mover::Raw | Mover::IpcBytes => "bytes",
            Mover::IpcSharedMemory => "IpcSharedMemory",
        }
    }

    /// `transport` in `--json`.
    pub fn transport(self) -> &'static str {
        match self {
            Mover::Anyfork { transport, .. } => transport.key(),
            Mover::Raw | Mover::IpcBytes => "socket",
            Mover::IpcSharedMemory => "shared_memory",
        }
    }

    /// A row label for people.
    pub fn label(self) -> String {
        match self {
            Mover::Raw => "raw I/O (socket)".into(),
            Mover::Anyfork {
                serialiser,
                message,
                transport,
                ..
            } => format!(
                "anyfork {serialiser} {} ({})",
                if message == Message::VecU8 {
                    "Vec<u8>"
                } else {
                    "ByteBuf"
                },
                transport.key().replace('_', " ")
            ),
            Mover::IpcBytes => "ipc-channel IpcBytes (socket)".into(),
            Mover::IpcSharedMemory => "ipc-channel IpcSharedMemory".into(),
        }
    }
}

/// One case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeCase {
    pub mover: Mover,
    pub payload_bytes: usize,
}

/// One measured case.
#[derive(Debug, Clone)]
pub struct LargeFigure {
    pub case: LargeCase,
    pub median_rtt_us: f64,
}

/// anyfork's synchronous backend with `serialiser` (as `SERIALISERS`
/// lists it).
pub fn anyfork(serialiser: (Codec, &'static str), message: Message, transport: Transport) -> Mover {
    Mover::Anyfork {
        codec: serialiser.0,
        serialiser: serialiser.1,
        message,
        transport,
    }
}

/// The cases of one payload, in the order shown.
pub fn cases(payload_bytes: usize) -> Vec<LargeCase> {
    let cbor = (Codec::Cbor, "cbor");
    let mut movers = vec![
        Mover::Raw,
        anyfork(cbor, Message::ByteBuf, Transport::Socket),
        anyfork(cbor, Message::ByteBuf, Transport::SharedMemory),
        Mover::IpcBytes,
        Mover::IpcSharedMemory,
    ];
    if payload_bytes == 1 << 20 {
        for serialiser in SERIALISERS {
            if serialiser.0 != Codec::Cbor {
                movers.push(anyfork(
                    serialiser,
                    Message::ByteBuf,
                    Transport::SharedMemory,
                ));
            }
            movers.push(anyfork(serialiser, Message::VecU8, Transport::SharedMemory));
        }
    }
    movers
        .into_iter()
        .map(|mover| LargeCase {
            mover,
            payload_bytes,
        })
        .collect()
}

fn echo_bytes(bytes: ByteBuf) -> ByteBuf {
    bytes
}

fn echo_vec(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

/// The ipc-channel child: connects to the parent's one-shot server (its
/// name is the argument), hands over a request sender and a reply
/// receiver, and echoes.
fn ipc_bytes_child(_socket: UnixStream, mut args: anyfork::Args) -> std::io::Result<()> {
    let name = args.string().map_err(std::io::Error::other)?;
    let hello: IpcSender<(IpcBytesSender, IpcBytesReceiver)> =
        IpcSender::connect(name).map_err(std::io::Error::other)?;
    let (request_tx, request_rx) = ipc::bytes_channel()?;
    let (reply_tx, reply_rx) = ipc::bytes_channel()?;
    hello
        .send((request_tx, reply_rx))
        .map_err(std::io::Error::other)?;
    while let Ok(message) = request_rx.recv() {
        reply_tx.send(&message)?;
    }
    Ok(())
}

type SharedPair = (IpcSender<IpcSharedMemory>, IpcReceiver<IpcSharedMemory>);

/// As [`ipc_bytes_child`], with `IpcSharedMemory` messages.
fn ipc_shared_child(_socket: UnixStream, mut args: anyfork::Args) -> std::io::Result<()> {
    let name = args.string().map_err(std::io::Error::other)?;
    let hello: IpcSender<SharedPair> = IpcSender::connect(name).map_err(std::io::Error::other)?;
    let (request_tx, request_rx) = ipc::channel().map_err(std::io::Error::other)?;
    let (reply_tx, reply_rx) = ipc::channel().map_err(std::io::Error::other)?;
    hello
        .send((request_tx, reply_rx))
        .map_err(std::io::Error::other)?;
    while let Ok(message) = request_rx.recv() {
        reply_tx.send(message).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// A payload whose bytes depend on their position.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The socket child and the RPC cases need a `Case` of the RPC table for
/// their labels and CPU placement.
fn as_rpc_case(case: &LargeCase) -> Case {
    Case {
        backend: match case.mover {
            Mover::Raw => Backend::Raw,
            _ => Backend::Sync,
        },
        serialiser: match case.mover {
            Mover::Anyfork {
                codec, serialiser, ..
            } => Some((codec, serialiser)),
            _ => None,
        },
        payload_bytes: case.payload_bytes,
        in_flight: 1,
    }
}

fn partner<'a>(case: &LargeCase, rpc_case: &'a Case) -> Result<RoundTrip<'a>, RpcBenchError> {
    let payload = pattern(case.payload_bytes);
    let wrong = move || RpcBenchError::WrongReply {
        case: rpc_case.describe(),
    };
    let ipc_error = move |doing: &'static str| {
        move |e: ipc_channel::IpcError| RpcBenchError::Io {
            case: rpc_case.describe(),
            doing,
            source: std::io::Error::other(format!("{e:?}")),
        }
    };
    let io_error = move |doing: &'static str| {
        move |source| RpcBenchError::Io {
            case: rpc_case.describe(),
            doing,
            source,
        }
    };
    Ok(match case.mover {
        Mover::Raw => crate::raw_socket::raw_round_trip(rpc_case)?,
        Mover::Anyfork {
            codec,
            message,
            transport,
            ..
        } => {
            let region = match transport {
                Transport::Socket => 0,
                Transport::SharedMemory => anyfork::rpc::shared_memory::DEFAULT_REGION,
            };
            let fork = new_fork(rpc_case)?;
            match message {
                Message::ByteBuf => echo_partner(
                    fork,
                    echo_bytes,
                    codec,
                    region,
                    ByteBuf::from(payload),
                    rpc_case,
                )?,
                Message::VecU8 => echo_partner(fork, echo_vec, codec, region, payload, rpc_case)?,
            }
        }
        Mover::IpcBytes => {
            let (socket, (request_tx, reply_rx)) =
                ipc_child::<(IpcBytesSender, IpcBytesReceiver)>(rpc_case, ipc_bytes_child)?;
            Box::new(move || {
                let _keep = &socket;
                request_tx
                    .send(&payload)
                    .map_err(io_error("sending with ipc-channel"))?;
                let back = reply_rx
                    .recv()
                    .map_err(ipc_error("receiving with ipc-channel"))?;
                if back == payload {
                    Ok(())
                } else {
                    Err(wrong())
                }
            })
        }
        Mover::IpcSharedMemory => {
            let (socket, (request_tx, reply_rx)) =
                ipc_child::<SharedPair>(rpc_case, ipc_shared_child)?;
            Box::new(move || {
                let _keep = &socket;
                request_tx
                    .send(IpcSharedMemory::from_bytes(&payload))
                    .map_err(|e| io_error("sending with ipc-channel")(std::io::Error::other(e)))?;
                let back = reply_rx
                    .recv()
                    .map_err(ipc_error("receiving with ipc-channel"))?;
                if *back == payload[..] {
                    Ok(())
                } else {
                    Err(wrong())
                }
            })
        }
    })
}

/// A round trip of anyfork's synchronous backend echoing `payload`.
fn echo_partner<'a, M, F, T>(
    fork: anyfork::Fork,
    function: F,
    codec: Codec,
    region: u64,
    payload: T,
    rpc_case: &'a Case,
) -> Result<RoundTrip<'a>, RpcBenchError>
where
    F: anyfork::rpc::IntoRpc<M, Req = T, Rep = T>,
    T: Clone + PartialEq + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let rpc = fork
        .rpc(function)
        .codec(codec)
        .shared_memory(region)
        .start()
        .map_err(start_error(rpc_case))?;
    Ok(Box::new(move || {
        let back = rpc
            .call_blocking(payload.clone())
            .map_err(|source| RpcBenchError::Call {
                case: rpc_case.describe(),
                source,
            })?;
        if back == payload {
            Ok(())
        } else {
            Err(RpcBenchError::WrongReply {
                case: rpc_case.describe(),
            })
        }
    }))
}

/// An ipc-channel child started with `child`, and what it handed over
/// (the request sender and the reply receiver); the socket keeps it alive.
fn ipc_child<T>(
    rpc_case: &Case,
    child: impl anyfork::IntoRun,
) -> Result<(UnixStream, T), RpcBenchError>
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    let failed = |doing: &'static str| {
        move |e: std::io::Error| RpcBenchError::Io {
            case: rpc_case.describe(),
            doing,
            source: e,
        }
    };
    let (server, name) = IpcOneShotServer::<T>::new().map_err(failed("starting ipc-channel"))?;
    let socket = new_fork(rpc_case)?
        .send_arg(name)
        .run(child)
        .map_err(start_error(rpc_case))?;
    let (_, pair) = server.accept().map_err(|e| {
        failed("accepting ipc-channel's child")(std::io::Error::other(format!("{e:?}")))
    })?;
    Ok((socket, pair))
}

/// Measures every case `rounds` times, each for about `time` a round;
/// `progress` hears about each payload.
pub fn run(
    rounds: usize,
    time: Duration,
    progress: &dyn Fn(&str),
) -> Result<Vec<LargeFigure>, RpcBenchError> {
    let mut figures = Vec::new();
    for payload in LARGE_PAYLOADS {
        let cases = cases(payload);
        progress(&format!(
            "RPC, large messages of {} KiB: {} cases",
            payload >> 10,
            cases.len()
        ));
        let rpc_cases: Vec<Case> = cases.iter().map(as_rpc_case).collect();
        let mut partners = cases
            .iter()
            .zip(&rpc_cases)
            .map(|(case, rpc_case)| partner(case, rpc_case))
            .collect::<Result<Vec<_>, _>>()?;
        for partner in &mut partners {
            for _ in 0..2 {
                partner()?;
            }
        }
        // Long enough blocks that each case runs with its own buffers in
        // the CPUs' caches (see `rpc_bench::measure_round_trips`).
        let block = if payload >= 16 << 20 { 4 } else { 16 };
        let mut rtts: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        for _ in 0..rounds {
            let mut round: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
            let start = Instant::now();
            let total = time * cases.len() as u32;
            while start.elapsed() < total || round.iter().any(|r| (r.len() as u64) < MIN_CALLS) {
                for (partner, times) in partners.iter_mut().zip(&mut round) {
                    for _ in 0..block {
                        let sent = Instant::now();
                        partner()?;
                        times.push(sent.elapsed().as_secs_f64() * 1e6);
                    }
                }
            }
            for (all, times) in rtts.iter_mut().zip(round) {
                all.push(median(times));
            }
        }
        figures.extend(cases.into_iter().zip(rtts).map(|(case, rtts)| LargeFigure {
            case,
            median_rtt_us: median(rtts),
        }));
    }
    Ok(figures)
}

/// The figure of `mover` at `payload_bytes`.
pub fn find(figures: &[LargeFigure], mover: Mover, payload_bytes: usize) -> Option<&LargeFigure> {
    figures
        .iter()
        .find(|f| f.case.mover == mover && f.case.payload_bytes == payload_bytes)
}
