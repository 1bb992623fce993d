//! `tracing` across the process boundary: events a child emits arrive in
//! the parent's subscriber (the manual's example 4, done natively).
//!
//! The parent sends the most verbose level its subscriber wants
//! (`LevelFilter::current()`); the child installs a small subscriber that
//! forwards every event at or above it as a `log` frame: level, target and
//! the formatted message with its fields. The parent re-emits it under the
//! child's own target (so `RUST_LOG=my_crate=debug` shows what workers of
//! `my_crate` say), with the child's pid as the field `pid`. Spans are not
//! forwarded.
//!
//! `tracing` wants a static callsite per target and level; the parent makes
//! one the first time it sees a (target, level) pair and keeps it for the
//! program's life. A child that invents targets without end would grow
//! that set: past [`MAX_TARGETS`] pairs, further records come under the
//! target `anyfork::child` with the child's target as a field.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Level numbers on the wire: 0 off, 1 error .. 5 trace.
pub(crate) fn level_code(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// The parent's most verbose enabled level, as a code.
pub(crate) fn current_level_code() -> u8 {
    match tracing::level_filters::LevelFilter::current().into_level() {
        Some(level) => level_code(level),
        None => 0,
    }
}

/// Forwards events to the parent.
struct Forwarder {
    max: u8,
    next_span: AtomicU64,
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl Subscriber for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        level_code(*metadata.level()) <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(match self.max {
            0 => tracing::level_filters::LevelFilter::OFF,
            1 => tracing::level_filters::LevelFilter::ERROR,
            2 => tracing::level_filters::LevelFilter::WARN,
            3 => tracing::level_filters::LevelFilter::INFO,
            4 => tracing::level_filters::LevelFilter::DEBUG,
            _ => tracing::level_filters::LevelFilter::TRACE,
        })
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = Text::default();
        event.record(&mut text);
        text.message.push_str(&text.fields);
        let metadata = event.metadata();
        super::writer::send_log(
            level_code(*metadata.level()),
            metadata.target(),
            &text.message,
        );
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// In the child: forward events at or above `level` (a code) to the parent,
/// unless the program already installed a subscriber of its own.
pub(crate) fn forward_to_parent(level: u8) {
    if level == 0 {
        return;
    }
    let forwarder = Forwarder {
        max: level,
        next_span: AtomicU64::new(1),
    };
    let _ = tracing::subscriber::set_global_default(forwarder);
}

/// How many (target, level) callsites the parent makes for forwarded
/// records; later new pairs use `anyfork::child`.
const MAX_TARGETS: usize = 512;

/// A callsite made at run time for one (target, level) of forwarded
/// records.
struct ChildCallsite {
    metadata: std::sync::OnceLock<tracing::Metadata<'static>>,
}

impl tracing::callsite::Callsite for ChildCallsite {
    fn set_interest(&self, _: tracing::subscriber::Interest) {}

    fn metadata(&self) -> &tracing::Metadata<'_> {
        // Set right after the callsite is made, before it is registered or
        // used (see `callsite`).
        self.metadata.get().unwrap_or(&FALLBACK_METADATA)
    }
}

/// Never used: what a callsite would answer before its metadata is set.
static FALLBACK_METADATA: tracing::Metadata<'static> = tracing::Metadata::new(
    "anyfork child record",
    "anyfork::child",
    Level::TRACE,
    None,
    None,
    None,
    tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&FALLBACK_CALLSITE)),
    tracing::metadata::Kind::EVENT,
);

static FALLBACK_CALLSITE: ChildCallsite = ChildCallsite {
    metadata: std::sync::OnceLock::new(),
};

/// The callsite for records of `target` at `level`, made (and leaked: it
/// lives as long as the program, as `tracing` requires) on first use;
/// `None` once [`MAX_TARGETS`] exist.
fn callsite(target: &str, level: Level) -> Option<&'static tracing::Metadata<'static>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, PoisonError};
    static MADE: Mutex<Option<HashMap<(String, u8), &'static tracing::Metadata<'static>>>> =
        Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    let made = made.get_or_insert_with(HashMap::new);
    let key = (target.to_owned(), level_code(level));
    if let Some(metadata) = made.get(&key) {
        return Some(metadata);
    }
    if made.len() >= MAX_TARGETS {
        return None;
    }
    let target: &'static str = Box::leak(target.to_owned().into_boxed_str());
    let callsite: &'static ChildCallsite = Box::leak(Box::new(ChildCallsite {
        metadata: std::sync::OnceLock::new(),
    }));
    let metadata = tracing::Metadata::new(
        "anyfork child record",
        target,
        level,
        None,
        None,
        None,
        tracing::field::FieldSet::new(&["message", "pid"], tracing::callsite::Identifier(callsite)),
        tracing::metadata::Kind::EVENT,
    );
    let metadata = callsite.metadata.get_or_init(|| metadata);
    tracing::callsite::register(callsite);
    made.insert(key, metadata);
    Some(metadata)
}

fn level_of(code: u8) -> Level {
    match code {
        1 => Level::ERROR,
        2 => Level::WARN,
        3 => Level::INFO,
        4 => Level::DEBUG,
        _ => Level::TRACE,
    }
}

/// In the parent: re-emits a forwarded record under the child's target.
pub(crate) fn emit(pid: Option<u32>, payload: &[u8]) {
    if payload.len() < 3 {
        return;
    }
    let level = level_of(payload[0]);
    let target_len = u16::from_be_bytes([payload[1], payload[2]]) as usize;
    let Some(target) = payload.get(3..3 + target_len) else {
        return;
    };
    let target = String::from_utf8_lossy(target);
    let message = String::from_utf8_lossy(&payload[3 + target_len..]);
    let pid = pid.unwrap_or(0);
    let Some(metadata) = callsite(&target, level) else {
        return emit_fallback(level, pid, &target, &message);
    };
    let enabled = tracing::dispatcher::get_default(|dispatch| dispatch.enabled(metadata));
    if !enabled {
        return;
    }
    let fields = metadata.fields();
    let (Some(message_field), Some(pid_field)) = (fields.field("message"), fields.field("pid"))
    else {
        return;
    };
    let message = format_args!("{message}");
    let values: [(&tracing::field::Field, Option<&dyn tracing::Value>); 2] = [
        (&message_field, Some(&message as &dyn tracing::Value)),
        (&pid_field, Some(&pid as &dyn tracing::Value)),
    ];
    tracing::Event::dispatch(metadata, &fields.value_set(&values));
}

/// Past [`MAX_TARGETS`]: the record under `anyfork::child`, its target as a
/// field.
fn emit_fallback(level: Level, pid: u32, target: &str, message: &str) {
    match level {
        Level::ERROR => {
            tracing::error!(target: "anyfork::child", pid, child_target = %target, "{message}")
        }
        Level::WARN => {
            tracing::warn!(target: "anyfork::child", pid, child_target = %target, "{message}")
        }
        Level::INFO => {
            tracing::info!(target: "anyfork::child", pid, child_target = %target, "{message}")
        }
        Level::DEBUG => {
            tracing::debug!(target: "anyfork::child", pid, child_target = %target, "{message}")
        }
        _ => tracing::trace!(target: "anyfork::child", pid, child_target = %target, "{message}"),
    }
}
