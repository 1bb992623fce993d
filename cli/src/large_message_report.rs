//! The large-message figures as a table and as JSON.

use serde_json::{Value, json};

use crate::large_message_bench::{
    LARGE_PAYLOADS, LargeFigure, Message, Mover, Transport, anyfork, cases, find,
};
use crate::rpc_bench::SERIALISERS;

fn cbor(transport: Transport) -> Mover {
    anyfork(
        (anyfork::rpc::Codec::Cbor, "cbor"),
        Message::ByteBuf,
        transport,
    )
}

fn ratio(figures: &[LargeFigure], a: Mover, b: Mover, payload: usize) -> Option<f64> {
    let a = find(figures, a, payload)?;
    let b = find(figures, b, payload)?;
    Some(a.median_rtt_us / b.median_rtt_us)
}

fn times(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}×"))
}

fn payload_name(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// The table for people.
pub fn render_table(figures: &[LargeFigure]) -> String {
    let mut out = String::from(
        "Large messages: a byte string sent and echoed back, one call at a time (median round trip).\n\
         raw I/O = by hand over the socket; anyfork = sync backend; ipc-channel = the crate procspawn uses.\n\n\
         | payload | how | RTT µs | / raw I/O | / ipc-channel IpcBytes |\n|---:|---|---:|---:|---:|\n",
    );
    for payload in LARGE_PAYLOADS {
        for case in cases(payload) {
            if matches!(case.mover, Mover::Anyfork { serialiser, message: Message::ByteBuf, .. } if serialiser != "cbor")
                || matches!(
                    case.mover,
                    Mover::Anyfork {
                        message: Message::VecU8,
                        ..
                    }
                )
            {
                continue;
            }
            let Some(figure) = find(figures, case.mover, payload) else {
                continue;
            };
            out.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} |\n",
                payload_name(payload),
                case.mover.label(),
                figure.median_rtt_us,
                times(ratio(figures, case.mover, Mover::Raw, payload)),
                times(ratio(figures, case.mover, Mover::IpcBytes, payload)),
            ));
        }
    }
    out.push_str(
        "\nA plain Vec<u8> against serde_bytes::ByteBuf, 1 MiB, shared memory (serde hands a Vec<u8> \
         to a codec one number at a time; anyfork moves it as one byte string):\n\n\
         | serialiser | ByteBuf RTT µs | Vec<u8> RTT µs | Vec<u8> / ByteBuf |\n|---|---:|---:|---:|\n",
    );
    for serialiser @ (_, name) in SERIALISERS {
        let bytes = anyfork(serialiser, Message::ByteBuf, Transport::SharedMemory);
        let vec = anyfork(serialiser, Message::VecU8, Transport::SharedMemory);
        let rtt =
            |m| find(figures, m, 1 << 20).map_or("-".into(), |f| format!("{:.0}", f.median_rtt_us));
        out.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            rtt(bytes),
            rtt(vec),
            times(ratio(figures, vec, bytes, 1 << 20))
        ));
    }
    out
}

/// `rpc_large` rows and `rpc_large_ratios`.
pub fn json(figures: &[LargeFigure]) -> serde_json::Map<String, Value> {
    let rounded = |v: f64| json!((v * 100.0).round() / 100.0);
    let optional = |v: Option<f64>| v.map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0));
    let rows = figures
        .iter()
        .map(|f| {
            json!({
                "backend": f.case.mover.backend(),
                "serialiser": f.case.mover.serialiser(),
                "message": f.case.mover.message(),
                "transport": f.case.mover.transport(),
                "payload_bytes": f.case.payload_bytes,
                "in_flight": 1,
                "median_rtt_us": rounded(f.median_rtt_us),
            })
        })
        .collect();
    let mut ratios: Vec<Value> = LARGE_PAYLOADS
        .iter()
        .map(|&payload| {
            let shared = cbor(Transport::SharedMemory);
            json!({
                "payload_bytes": payload,
                "shared_memory_over_raw_socket": optional(ratio(figures, shared, Mover::Raw, payload)),
                "socket_over_raw_socket": optional(ratio(figures, cbor(Transport::Socket), Mover::Raw, payload)),
                "shared_memory_over_ipc_bytes": optional(ratio(figures, shared, Mover::IpcBytes, payload)),
                "shared_memory_over_ipc_shared_memory": optional(ratio(figures, shared, Mover::IpcSharedMemory, payload)),
            })
        })
        .collect();
    for serialiser @ (_, name) in SERIALISERS {
        ratios.push(json!({
            "payload_bytes": 1 << 20,
            "serialiser": name,
            "vec_u8_over_byte_buf": optional(ratio(
                figures,
                anyfork(serialiser, Message::VecU8, Transport::SharedMemory),
                anyfork(serialiser, Message::ByteBuf, Transport::SharedMemory),
                1 << 20,
            )),
        }));
    }
    let mut out = serde_json::Map::new();
    out.insert("rpc_large".into(), Value::Array(rows));
    out.insert("rpc_large_ratios".into(), Value::Array(ratios));
    out
}
