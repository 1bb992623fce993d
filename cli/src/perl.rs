//! Perl's AnyEvent::Fork, measured the same way in the same run, when it is
//! installed (Debian: `libanyevent-fork-perl`).

use std::process::Command;
use std::time::Duration;

use crate::median::median;

/// What the Perl module manages on this machine.
#[derive(Debug, Clone)]
pub struct PerlFigures {
    pub version: String,
    pub new_per_sec: f64,
    pub new_exec_per_sec: f64,
}

/// Creates processes one at a time with `new` or `new_exec`, runs
/// `CORE::exit` in each and waits for end-of-file on its socket, for the
/// given number of seconds; prints the version and the rate.
const SCRIPT: &str = r#"
use strict;
use AnyEvent;
use AnyEvent::Fork;
use Time::HiRes qw(time);

my ($mode, $seconds) = @ARGV;
$SIG{CHLD} = 'IGNORE'; # new_exec children are ours: let the kernel reap them

sub once {
   my $cv = AE::cv;
   ($mode eq "new_exec" ? AnyEvent::Fork->new_exec : AnyEvent::Fork->new)
      ->run ("CORE::exit", $cv);
   my $fh = $cv->recv;
   while (1) {
      my $r = sysread $fh, my $buf, 64;
      last if defined $r && $r == 0;
      next if defined $r;
      my $readable = AE::cv;
      my $w = AE::io $fh, 0, sub { $readable->send };
      $readable->recv;
   }
}

once (); # the default template
my ($n, $t0) = (0, time);
while ($n < 3 || time - $t0 < $seconds) {
   once ();
   ++$n;
}
printf "%s %.1f\n", $AnyEvent::Fork::VERSION, $n / (time - $t0);
"#;

fn run_once(mode: &str, time: Duration) -> Option<(String, f64)> {
    let output = Command::new("perl")
        .args(["-e", SCRIPT, mode, &format!("{:.2}", time.as_secs_f64())])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let (version, rate) = text.trim().split_once(' ')?;
    Some((version.to_owned(), rate.parse().ok()?))
}

/// Perl's rates, gathered one round at a time so that the rounds can be
/// taken between anyfork's own, side by side.
#[derive(Debug, Default)]
pub struct PerlRounds {
    version: String,
    new: Vec<f64>,
    new_exec: Vec<f64>,
    /// Perl or the module is missing: stop trying.
    missing: bool,
}

impl PerlRounds {
    /// Measures `new` and then `new_exec` once each, for `time` each. Once
    /// Perl or the module turns out to be missing, measures nothing more.
    pub fn round(&mut self, time: Duration) {
        if self.missing {
            return;
        }
        let both = run_once("new", time).and_then(|new| Some((new, run_once("new_exec", time)?.1)));
        match both {
            Some(((version, new), new_exec)) => {
                self.version = version;
                self.new.push(new);
                self.new_exec.push(new_exec);
            }
            None => self.missing = true,
        }
    }

    /// The medians of the rounds; `None` if none was measured.
    pub fn figures(self) -> Option<PerlFigures> {
        if self.missing || self.new.is_empty() {
            return None;
        }
        Some(PerlFigures {
            version: self.version,
            new_per_sec: median(self.new),
            new_exec_per_sec: median(self.new_exec),
        })
    }
}
