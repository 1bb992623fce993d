//! The baseline of the RPC benchmark: the same messages sent by hand over
//! a socket to a child that echoes them (what RPC is compared with).

use anyfork::Args;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::rpc_bench::{
    Case, MIN_CALLS, RoundTrip, RpcBenchError, Sample, new_fork, payload, runtime, start_error,
};

/// The raw cases' child: reads messages of the size it was sent and
/// writes each back whole.
pub(crate) fn echo_messages(mut socket: UnixStream, mut args: Args) -> io::Result<()> {
    let size = args
        .string()
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no message size"))?;
    let mut message = vec![0u8; size];
    loop {
        match socket.read_exact(&mut message) {
            Ok(()) => socket.write_all(&message)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A raw echo: write the message, read it back.
pub(crate) fn raw_round_trip(case: &Case) -> Result<RoundTrip<'_>, RpcBenchError> {
    let io_error = move |doing| {
        move |source| RpcBenchError::Io {
            case: case.describe(),
            doing,
            source,
        }
    };
    let mut socket = start_raw_child(case)?;
    let message = payload(case.payload_bytes).into_bytes();
    let mut back = vec![0u8; case.payload_bytes];
    Ok(Box::new(move || {
        socket
            .write_all(&message)
            .map_err(io_error("writing a message"))?;
        socket
            .read_exact(&mut back)
            .map_err(io_error("reading a message"))?;
        if back == message {
            Ok(())
        } else {
            Err(RpcBenchError::WrongReply {
                case: case.describe(),
            })
        }
    }))
}

pub(crate) fn start_raw_child(case: &Case) -> Result<UnixStream, RpcBenchError> {
    new_fork(case)?
        .send_arg(case.payload_bytes.to_string())
        .run(echo_messages)
        .map_err(start_error(case))
}

/// A writer task keeps `in_flight` messages in flight, gated by a
/// semaphore; the reader reads replies and hands back permits.
pub(crate) fn raw_pipelined(case: &Case, time: Duration) -> Result<Sample, RpcBenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io_error = |doing| {
        move |source| RpcBenchError::Io {
            case: case.describe(),
            doing,
            source,
        }
    };
    let socket = start_raw_child(case)?;
    socket
        .set_nonblocking(true)
        .map_err(io_error("preparing the socket"))?;
    runtime(case)?.block_on(async {
        let socket =
            tokio::net::UnixStream::from_std(socket).map_err(io_error("preparing the socket"))?;
        let (mut reader, mut writer) = socket.into_split();
        let message = Arc::new(payload(case.payload_bytes).into_bytes());
        let sent_at = Arc::new(Mutex::new(VecDeque::<Instant>::new()));
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let writing = {
            let (message, sent_at, permits) = (message.clone(), sent_at.clone(), permits.clone());
            tokio::spawn(async move {
                // Until the semaphore is closed.
                while let Ok(permit) = permits.acquire().await {
                    permit.forget();
                    sent_at
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_back(Instant::now());
                    writer.write_all(&message).await?;
                }
                Ok::<_, io::Error>(())
            })
        };
        let mut back = vec![0u8; case.payload_bytes];
        let mut read_one = async |permits: &tokio::sync::Semaphore| {
            reader
                .read_exact(&mut back)
                .await
                .map_err(io_error("reading a message"))?;
            permits.add_permits(1);
            Ok::<_, RpcBenchError>(
                sent_at
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front(),
            )
        };
        // Warm up one window, then measure.
        permits.add_permits(case.in_flight);
        for _ in 0..case.in_flight {
            read_one(&permits).await?;
        }
        let mut sample = Sample::new();
        let start = Instant::now();
        let min_calls = MIN_CALLS.max(case.in_flight as u64);
        while sample.calls < min_calls || start.elapsed() < time {
            if let Some(sent) = read_one(&permits).await? {
                sample.rtts.push(sent.elapsed());
            }
            sample.calls += 1;
        }
        sample.elapsed = start.elapsed();
        // Stop the writer and take in what is still in flight.
        permits.close();
        match writing.await {
            Ok(result) => result.map_err(io_error("writing a message"))?,
            Err(e) => return Err(io_error("writing a message")(io::Error::other(e))),
        }
        let outstanding = sent_at.lock().unwrap_or_else(PoisonError::into_inner).len();
        for _ in 0..outstanding {
            read_one(&permits).await?;
        }
        if back != *message {
            return Err(RpcBenchError::WrongReply {
                case: case.describe(),
            });
        }
        Ok(sample)
    })
}
