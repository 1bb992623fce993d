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

/// Measures both methods `rounds` times; `None` if Perl or the module is
/// missing.
pub fn measure(rounds: usize, time: Duration) -> Option<PerlFigures> {
    let mut version = String::new();
    let (mut new, mut new_exec) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let (v, rate) = run_once("new", time)?;
        new.push(rate);
        let (_, rate) = run_once("new_exec", time)?;
        new_exec.push(rate);
        version = v;
    }
    Some(PerlFigures {
        version,
        new_per_sec: median(new),
        new_exec_per_sec: median(new_exec),
    })
}
