//! How many CPUs the whole machine kept busy over a stretch of time, from
//! `/proc/stat`: to show whether a figure is limited by the CPUs (say,
//! `Fork::new` from one thread already keeping both of two CPUs busy, so
//! that a second thread cannot double the rate).

/// The machine's CPU time so far, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuTime {
    busy: u64,
    total: u64,
}

impl CpuTime {
    /// Now; `None` where `/proc/stat` cannot be read or parsed.
    pub fn now() -> Option<CpuTime> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        parse(stat.lines().next()?)
    }

    /// CPUs kept busy on average from `self` to `later`, out of `cpus`.
    pub fn busy_cpus_until(&self, later: &CpuTime, cpus: usize) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        let busy = later.busy.checked_sub(self.busy)?;
        (total > 0).then(|| busy as f64 / total as f64 * cpus as f64)
    }
}

/// The `cpu` line: user nice system idle iowait irq softirq steal …
/// (idle and iowait are not busy; steal, time the hypervisor gave to
/// others, is left out of both).
fn parse(line: &str) -> Option<CpuTime> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, ..] = ticks[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq;
    Some(CpuTime {
        busy,
        total: busy + idle + iowait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_of_the_cpus() {
        let before = parse("cpu  100 0 50 800 50 0 0 7 0 0").unwrap();
        let after = parse("cpu  250 0 100 850 50 0 0 9 0 0").unwrap();
        // 200 busy ticks of 250: 0.8 of 2 CPUs.
        let busy = before.busy_cpus_until(&after, 2).unwrap();
        assert!((busy - 1.6).abs() < 1e-9, "{busy}");
        assert!(parse("intr 1 2 3").is_none());
        assert!(parse("cpu 1 2").is_none());
    }
}
