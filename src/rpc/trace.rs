//! `tracing` across the process boundary: events a child emits arrive in
//! the parent's subscriber (the manual's example 4, done natively).
//!
//! The parent sends the most verbose level its subscriber wants
//! (`LevelFilter::current()`); the child installs a small subscriber that
//! forwards every event at or above it as a `log` frame: level, target and
//! the formatted message with its fields. The parent re-emits it with
//! target `anyfork::child`, the child's pid and original target as fields.
//! Spans are not forwarded.

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

/// In the parent: re-emits a forwarded record.
pub(crate) fn emit(pid: Option<u32>, payload: &[u8]) {
    if payload.len() < 3 {
        return;
    }
    let level = payload[0];
    let target_len = u16::from_be_bytes([payload[1], payload[2]]) as usize;
    let Some(target) = payload.get(3..3 + target_len) else {
        return;
    };
    let target = String::from_utf8_lossy(target);
    let message = String::from_utf8_lossy(&payload[3 + target_len..]);
    let pid = pid.unwrap_or(0);
    match level {
        1 => tracing::error!(target: "anyfork::child", pid, child_target = %target, "{message}"),
        2 => tracing::warn!(target: "anyfork::child", pid, child_target = %target, "{message}"),
        3 => tracing::info!(target: "anyfork::child", pid, child_target = %target, "{message}"),
        4 => tracing::debug!(target: "anyfork::child", pid, child_target = %target, "{message}"),
        _ => tracing::trace!(target: "anyfork::child", pid, child_target = %target, "{message}"),
    }
}
