//! The benchmark's report as one JSON object (`anyfork bench --json`).

use serde_json::{Value, json};

use crate::bench::{Method, PERL_COMPARED_AT_MB, Report, SIZES_MB, SpawnReport};
use crate::perl::PerlFigures;
use crate::pool_bench::{self, PoolReport};
use crate::rpc_bench::{self, RpcFigure};

fn rounded(v: f64, places: i32) -> Value {
    // Not `powi`: with a variable exponent it links libm's `pow`, and every
    // `new_exec` of the tool would load libm.so.6 for it.
    let scale = match places {
        1 => 10.0,
        2 => 100.0,
        _ => 1000.0,
    };
    json!((v * scale).round() / scale)
}

fn optional(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| rounded(v, 3))
}

/// The report as one JSON object.
pub fn render_json(report: &Report) -> String {
    let mut object = serde_json::Map::new();
    object.insert(
        "machine".into(),
        json!({
            "cpus": report.cpus,
            "pinned": report.options.pin,
            "rounds": report.options.rounds(),
            "rpc_rounds": report.options.rpc_rounds(),
        }),
    );
    if let Some(spawn) = &report.spawn {
        object.extend(spawn_json(spawn));
    }
    if let Some(rpc) = &report.rpc {
        object.extend(rpc_json(rpc));
    }
    if let Some(large) = &report.rpc_large {
        object.extend(crate::large_message_report::json(large));
    }
    if let Some(pool) = &report.pool {
        object.extend(pool_json(pool));
    }
    Value::Object(object).to_string()
}

fn spawn_json(report: &SpawnReport) -> serde_json::Map<String, Value> {
    let spawn: Vec<Value> = report
        .figures
        .iter()
        .map(|f| {
            json!({
                "method": f.method.key(),
                "parent_mb": f.parent_mb,
                "parent_rss_kb": f.parent_rss_kb,
                "per_sec": rounded(f.per_sec, 1),
            })
        })
        .collect();
    let new_over_plain_fork: serde_json::Map<String, Value> = SIZES_MB
        .iter()
        .map(|&mb| {
            (
                mb.to_string(),
                optional(report.ratio((Method::New, mb), (Method::PlainFork, mb))),
            )
        })
        .collect();
    let perl = match &report.perl {
        Some(p) => json!({
            "version": p.version,
            "new_per_sec": rounded(p.new_per_sec, 1),
            "new_exec_per_sec": rounded(p.new_exec_per_sec, 1),
        }),
        None => Value::Null,
    };
    let perl_ratio = |m: Method, theirs: fn(&PerlFigures) -> f64| {
        optional(
            report
                .perl
                .as_ref()
                .and_then(|p| Some(report.rate(m, PERL_COMPARED_AT_MB)? / theirs(p))),
        )
    };
    let mut spawn = spawn;
    for &(threads, per_sec) in &report.scaling.concurrent {
        spawn.push(json!({
            "method": Method::New.key(),
            "threads": threads,
            "parent_mb": SIZES_MB[0],
            "per_sec": rounded(per_sec, 1),
            "cpus_busy": report.scaling.busy(threads).map(|b| rounded(b, 2)),
        }));
    }
    let mut out = serde_json::Map::new();
    out.insert("spawn".into(), Value::Array(spawn));
    out.insert(
        "spawn_latency".into(),
        json!({
            "method": Method::New.key(),
            "what": "Fork::new to the first byte back",
            "samples": report.scaling.samples,
            "first_byte_us_p50": rounded(report.scaling.first_byte_p50_us, 1),
            "first_byte_us_p99": rounded(report.scaling.first_byte_p99_us, 1),
        }),
    );
    out.insert(
        "memory".into(),
        json!({
            "template_rss_kb": report.template.rss_kb,
            "template_pss_kb": report.template.pss_kb,
            "child_rss_kb": report.child.rss_kb,
            "child_pss_kb": report.child.pss_kb,
        }),
    );
    out.insert(
        "ratios".into(),
        json!({
            "new_over_plain_fork": new_over_plain_fork,
            "new_2000mb_over_new_5mb": optional(report.ratio((Method::New, 2000), (Method::New, 5))),
            "new_exec_over_posix_spawn_true": optional(report.ratio((Method::NewExec, 5), (Method::PosixSpawnTrue, 5))),
            "new_2_threads_over_1_thread": optional(
                report.scaling.rate(2).zip(report.scaling.rate(1)).map(|(a, b)| a / b)
            ),
            "new_over_perl_new": perl_ratio(Method::New, |p| p.new_per_sec),
            "new_exec_over_perl_new_exec": perl_ratio(Method::NewExec, |p| p.new_exec_per_sec),
        }),
    );
    out.insert("perl".into(), perl);
    out
}

fn rpc_json(figures: &[RpcFigure]) -> serde_json::Map<String, Value> {
    let list: Vec<Value> = figures
        .iter()
        .map(|f| {
            json!({
                "backend": f.case.backend.key(),
                "serialiser": f.case.serialiser_name(),
                "payload_bytes": f.case.payload_bytes,
                "in_flight": f.case.in_flight,
                "transport": rpc_bench::transport(&f.case),
                "calls_per_sec": rounded(f.calls_per_sec, 1),
                "median_rtt_us": rounded(f.median_rtt_us, 2),
            })
        })
        .collect();
    let mut ratios = Vec::new();
    for payload in rpc_bench::PAYLOADS {
        for (_, name) in rpc_bench::SERIALISERS {
            let (rtt_ratio, rate_ratio) = rpc_bench::ratios(figures, name, payload);
            ratios.push(json!({
                "serialiser": name,
                "payload_bytes": payload,
                "sync_rtt_over_raw_rtt": optional(rtt_ratio),
                "async_window_rate_over_raw_rate": optional(rate_ratio),
            }));
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("rpc".into(), Value::Array(list));
    out.insert("rpc_ratios".into(), Value::Array(ratios));
    out
}

fn pool_json(report: &PoolReport) -> serde_json::Map<String, Value> {
    let list: Vec<Value> = report
        .figures
        .iter()
        .map(|f| {
            json!({
                "case": f.case,
                "runner": f.runner.key(),
                "max": f.max,
                "in_flight": f.in_flight,
                "calls_per_sec": rounded(f.calls_per_sec, 1),
                "median_rtt_us": rounded(f.median_rtt_us, 2),
            })
        })
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("pool".into(), Value::Array(list));
    out.insert("recovery_ms".into(), rounded(report.recovery_ms, 2));
    out.insert(
        "pool_ratios".into(),
        pool_bench::ratios(report)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), optional(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool_bench::{PoolFigure, Runner};

    #[test]
    fn the_pool_section_has_the_rows_and_ratios_asked_for() {
        let figure = |case, runner, max, rate, rtt| PoolFigure {
            case,
            runner,
            max,
            in_flight: 64,
            calls_per_sec: rate,
            median_rtt_us: rtt,
        };
        let report = PoolReport {
            figures: vec![
                figure("cpu_1ms", Runner::Pool, 1, 1000.0, 64_000.0),
                figure("cpu_1ms", Runner::Pool, 2, 1960.0, 32_000.0),
                figure("sync_rtt", Runner::Pool, 1, 20_000.0, 50.0),
                figure("sync_rtt", Runner::Rpc, 1, 21_000.0, 48.0),
            ],
            recovery_ms: 1.25,
            ncpu: 2,
        };
        let json: Value =
            serde_json::from_str(&Value::Object(pool_json(&report)).to_string()).unwrap();
        let rows = json["pool"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1]["case"], "cpu_1ms");
        assert_eq!(rows[1]["runner"], "pool");
        assert_eq!(rows[1]["max"], 2);
        assert_eq!(rows[1]["in_flight"], 64);
        assert_eq!(rows[1]["calls_per_sec"], 1960.0);
        assert_eq!(json["recovery_ms"], 1.25);
        assert_eq!(json["pool_ratios"]["cpu_max2_over_max1"], 1.96);
        assert_eq!(json["pool_ratios"]["sync_rtt_pool_over_rpc"], 1.042);
        assert!(json["pool_ratios"]["trivial_pool_over_rpc"].is_null());
    }
}
