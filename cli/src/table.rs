//! The benchmark's report as a table (what `anyfork bench` prints).

use crate::bench::{Method, PERL_COMPARED_AT_MB, Report, SIZES_MB, SpawnReport};
use crate::pool_bench::{self, PoolReport};
use crate::rpc_bench::{self, RpcFigure};

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{r:.2}×"))
}

/// The report as a table for people.
pub fn render_table(report: &Report) -> String {
    let pin = if report.options.pin {
        "pinned to CPU 0"
    } else {
        "unpinned"
    };
    let mut out = format!(
        "{} CPUs, {pin}; medians of {} rounds (processes), {} rounds (RPC)\n",
        report.cpus,
        report.options.rounds(),
        report.options.rpc_rounds()
    );
    if let Some(spawn) = &report.spawn {
        out.push('\n');
        out.push_str(&render_spawn_table(spawn));
    }
    if let Some(rpc) = &report.rpc {
        out.push('\n');
        let placement = if report.options.pin {
            "This process and its children all on CPU 0."
        } else if report.cpus >= 2 {
            "This process on CPU 0, the children on CPU 1 (so that every case wakes across CPUs)."
        } else {
            "One CPU."
        };
        out.push_str(&render_rpc_table(rpc, placement));
    }
    if let Some(large) = &report.rpc_large {
        out.push('\n');
        out.push_str(&crate::large_message_report::render_table(large));
    }
    if let Some(pool) = &report.pool {
        out.push('\n');
        out.push_str(&render_pool_table(pool));
    }
    out
}

fn render_pool_table(report: &PoolReport) -> String {
    let mut out = format!(
        "Worker pools ({} CPUs usable; medians of rounds; 64 calls in flight unless said)\n\n",
        report.ncpu
    );
    out.push_str("| case | runner | workers | calls/s | median round trip |\n");
    out.push_str("|---|---|---:|---:|---:|\n");
    for f in &report.figures {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} µs |\n",
            f.case,
            f.runner.key(),
            f.max,
            thousands(f.calls_per_sec),
            f.median_rtt_us
        ));
    }
    out.push('\n');
    for (name, ratio) in pool_bench::ratios(report) {
        out.push_str(&format!("{name}: {}\n", times(ratio)));
    }
    out.push_str(&format!(
        "recovery from a worker's SIGKILL to full width: {:.1} ms (median)\n",
        report.recovery_ms
    ));
    out
}

fn render_spawn_table(report: &SpawnReport) -> String {
    let mut out =
        String::from("Processes per second, created one at a time and waited for (socket EOF)\n\n");
    out.push_str(
        "| parent | (a) plain fork | (b) Fork::new | (c) new_exec | (d) template fork | (e) posix_spawn /bin/true | b/a | c/e |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &mb in &SIZES_MB {
        let cell = |m| report.rate(m, mb).map_or("-".into(), thousands);
        out.push_str(&format!(
            "| {mb} MB | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(Method::PlainFork),
            cell(Method::New),
            cell(Method::NewExec),
            cell(Method::TemplateFork),
            cell(Method::PosixSpawnTrue),
            times(report.ratio((Method::New, mb), (Method::PlainFork, mb))),
            times(report.ratio((Method::NewExec, mb), (Method::PosixSpawnTrue, mb)))
        ));
    }
    out.push_str(&format!(
        "\nFork::new with a 2000 MB parent / with a 5 MB parent: {}\n",
        times(report.ratio((Method::New, 2000), (Method::New, 5)))
    ));
    let scaling = &report.scaling;
    out.push_str(&format!(
        "Fork::new from 1 thread: {}/s; from 2 threads at once: {}/s ({}; CPUs the machine kept busy: {} and {} of {}); Fork::new to the first byte back: {:.0} µs median, {:.0} µs 99th percentile ({} samples)\n",
        scaling.rate(1).map_or("-".into(), thousands),
        scaling.rate(2).map_or("-".into(), thousands),
        times(scaling.rate(2).zip(scaling.rate(1)).map(|(a, b)| a / b)),
        scaling.busy(1).map_or("-".into(), |b| format!("{b:.2}")),
        scaling.busy(2).map_or("-".into(), |b| format!("{b:.2}")),
        scaling.cpus,
        scaling.first_byte_p50_us,
        scaling.first_byte_p99_us,
        scaling.samples
    ));
    out.push_str(&format!(
        "Memory: default template RSS {} kB, PSS {} kB; idle forked child RSS {} kB, PSS {} kB\n",
        report.template.rss_kb, report.template.pss_kb, report.child.rss_kb, report.child.pss_kb
    ));
    match &report.perl {
        Some(perl) => out.push_str(&format!(
            "Perl AnyEvent::Fork {} on this machine: new {}/s, new_exec {}/s; Fork::new (5 MB) is {}, new_exec is {}\n",
            perl.version,
            thousands(perl.new_per_sec),
            thousands(perl.new_exec_per_sec),
            times(report.rate(Method::New, PERL_COMPARED_AT_MB).map(|r| r / perl.new_per_sec)),
            times(
                report
                    .rate(Method::NewExec, PERL_COMPARED_AT_MB)
                    .map(|r| r / perl.new_exec_per_sec)
            ),
        )),
        None => out.push_str("Perl AnyEvent::Fork: not measured (not installed, or --no-perl)\n"),
    }
    out
}

fn payload_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn render_rpc_table(figures: &[RpcFigure], placement: &str) -> String {
    use rpc_bench::{Backend, WINDOW};
    let mut out = format!(
        "RPC: each call sends a string and gets it back. raw = the same messages by hand, no RPC.\n\
         Round trips (RTT) are medians, one call at a time; rates with 1 or {WINDOW} calls in flight.\n\
         {placement}\n\n"
    );
    out.push_str(&format!(
        "| payload | serialiser | sync RTT µs | sync / raw RTT | async RTT µs | async calls/s | async ×{WINDOW} calls/s | ×{WINDOW} async / raw |\n"
    ));
    out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|\n");
    let rtt = |f: Option<&RpcFigure>| f.map_or("-".into(), |f| format!("{:.1}", f.median_rtt_us));
    let rate = |f: Option<&RpcFigure>| f.map_or("-".into(), |f| thousands(f.calls_per_sec));
    for payload in rpc_bench::PAYLOADS {
        let find = |backend, serialiser, in_flight| {
            rpc_bench::find(figures, backend, serialiser, payload, in_flight)
        };
        out.push_str(&format!(
            "| {} | raw I/O | {} | 1.00× | | {} | {} | 1.00× |\n",
            payload_name(payload),
            rtt(find(Backend::Raw, "none", 1)),
            rate(find(Backend::Raw, "none", 1)),
            rate(find(Backend::Raw, "none", WINDOW)),
        ));
        for (_, name) in rpc_bench::SERIALISERS {
            let (rtt_ratio, rate_ratio) = rpc_bench::ratios(figures, name, payload);
            out.push_str(&format!(
                "| {} | {name} | {} | {} | {} | {} | {} | {} |\n",
                payload_name(payload),
                rtt(find(Backend::Sync, name, 1)),
                times(rtt_ratio),
                rtt(find(Backend::Async, name, 1)),
                rate(find(Backend::Async, name, 1)),
                rate(find(Backend::Async, name, WINDOW)),
                times(rate_ratio),
            ));
        }
    }
    out
}
