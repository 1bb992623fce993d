//! Where a pool's workers come from: its template, and any other templates
//! added with [`PoolBuilder::source`](super::PoolBuilder::source) (on other
//! machines, say), each with its own `max`.
//!
//! A new worker is forked from the source that is least full (workers
//! over `max`), so work spreads over machines in proportion to their
//! share. A source whose template is gone (its connection dropped) is
//! *down*: it starts nothing more, and the pool's `max` shrinks by its
//! share, so its workers' replacements start where there is room.

use super::config::Config;
use super::state::{Chores, State};

impl<Req> State<Req> {
    /// Workers of source `i` that count toward its `max`, with those
    /// starting.
    fn active_from(&self, i: usize) -> usize {
        self.workers
            .iter()
            .filter(|w| w.source == i && w.counts())
            .count()
            + self.sources[i].starting
    }

    /// The source the next worker comes from: the least full of those up
    /// and with room; `None` if none has room.
    pub(super) fn pick_source(&self) -> Option<usize> {
        (0..self.sources.len())
            .filter(|&i| !self.sources[i].down)
            .map(|i| (i, self.active_from(i), self.sources[i].max))
            .filter(|&(_, active, max)| active < max)
            // Least full first: active / max, compared without division.
            .min_by(|a, b| (a.1 * b.2).cmp(&(b.1 * a.2)).then(a.0.cmp(&b.0)))
            .map(|(i, _, _)| i)
    }

    /// The pool's `max`: the sum of the sources that are up.
    pub(super) fn refresh_max(&mut self) {
        self.max = self.sources.iter().filter(|s| !s.down).map(|s| s.max).sum();
    }

    /// Source `i`'s template is gone. If it was the last one up, the
    /// breaker trips: nothing could ever serve the calls.
    pub(super) fn source_down(&mut self, config: &Config, i: usize, chores: &mut Chores<Req>) {
        let Some(source) = self.sources.get_mut(i) else {
            return;
        };
        if source.down {
            return;
        }
        source.down = true;
        tracing::debug!("anyfork pool: source {i} is down (its template is gone)");
        self.refresh_max();
        chores.wake_supervisor = true;
        if self.max == 0 && self.crash.tripped.is_none() {
            self.crash.in_a_row = config.crash_limit.saturating_sub(1);
            self.note_crash(
                config,
                "every template the pool forks workers from is gone".to_owned(),
                chores,
            );
        }
    }
}
