//! What the machine was doing while a benchmark ran: where the server and the load generator
//! run (pinning), how much CPU the server spent, and how much CPU other processes took from the
//! cores the benchmark uses.
//!
//! Everything comes from `/proc` and `getrusage`, in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 per
//! second on Linux) for `/proc`: a run of one second is measured to about 2%.

use std::process::Command;
use std::time::Instant;

/// Clock ticks per second of `/proc`'s CPU times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The cores the benchmarks use, when the machine lets it pin them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinning {
    /// The server's core (`taskset -c`).
    pub server: usize,
    /// The load generator's core: `redis-benchmark` (`taskset -c`) and this process, which runs
    /// our driver.
    pub generator: usize,
}

impl Pinning {
    /// Pins the server to the first core this process may use and the load generator to the
    /// second, when there are at least 2 and `taskset` is installed; `None` otherwise, or when
    /// `BENCH_PIN=0`. The reason is the second field.
    pub fn detect() -> (Option<Pinning>, String) {
        if std::env::var("BENCH_PIN").is_ok_and(|v| v == "0") {
            return (None, "not pinned: BENCH_PIN=0".into());
        }
        let cores = allowed_cores();
        if cores.len() < 2 {
            return (
                None,
                format!(
                    "not pinned: this process may run on {} core(s), pinning needs 2",
                    cores.len()
                ),
            );
        }
        let taskset = Command::new("taskset")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !taskset {
            return (None, "not pinned: `taskset` is not installed".into());
        }
        let pinning = Pinning {
            server: cores[0],
            generator: cores[1],
        };
        (
            Some(pinning),
            format!(
                "the server on core {} (`taskset -c {}`), the load generator on core {}",
                pinning.server, pinning.server, pinning.generator
            ),
        )
    }

    /// Pins the calling thread, and the threads and processes it starts from then on, to the
    /// generator's core.
    pub fn pin_generator_here(&self) -> std::io::Result<()> {
        pin_current_thread(self.generator)
    }
}

/// The cores this process may run on.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: the set is built with the libc macros and passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `/proc/loadavg`'s three load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// The CPU time of process `pid` (all its threads, user and system), in clock ticks: fields 14
/// and 15 of `/proc/<pid>/stat`.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3, so field n is fields[n - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// One core's times from `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreTimes {
    /// user + nice + system: time running processes.
    pub busy: u64,
    /// steal: time the hypervisor gave this virtual core's CPU to another guest.
    pub steal: u64,
}

/// The times of every core, indexed by core number; the total over all cores last.
fn core_times() -> Vec<CoreTimes> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    let mut cores = Vec::new();
    let mut total = CoreTimes::default();
    for line in stat.lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let Some(index) = name.strip_prefix("cpu") else {
            continue;
        };
        let values: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
        let value = |i: usize| values.get(i).copied().unwrap_or(0);
        let times = CoreTimes {
            busy: value(0) + value(1) + value(2),
            steal: value(7),
        };
        match index.parse::<usize>() {
            Ok(cpu) => {
                if cores.len() <= cpu {
                    cores.resize(cpu + 1, CoreTimes::default());
                }
                cores[cpu] = times;
            }
            Err(_) => total = times,
        }
    }
    cores.push(total);
    cores
}

/// This process's CPU time and that of its waited-for children, in microseconds.
fn own_micros() -> (f64, f64) {
    let micros = |who| {
        // SAFETY: getrusage fills the zeroed struct.
        unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            if libc::getrusage(who, &mut usage) != 0 {
                return 0.0;
            }
            let time = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
            time(usage.ru_utime) + time(usage.ru_stime)
        }
    };
    (micros(libc::RUSAGE_SELF), micros(libc::RUSAGE_CHILDREN))
}

/// The machine's counters at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    server: Option<u64>,
    cores: Vec<CoreTimes>,
    own: (f64, f64),
}

impl Snapshot {
    /// Reads the counters, with the server's CPU time.
    pub fn take(server_pid: u32) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            server: process_ticks(server_pid),
            cores: core_times(),
            own: own_micros(),
        }
    }
}

/// What the machine did between two snapshots around one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Wall time, seconds.
    pub seconds: f64,
    /// The server's CPU time, seconds.
    pub server_seconds: f64,
    /// The load generator's CPU time (this process and its children), seconds.
    pub generator_seconds: f64,
    /// CPU that processes other than the server and the generator took on the benchmark's cores
    /// (both pinned cores; every core when not pinned), as a share of the wall time: 0.10 is a
    /// tenth of one core.
    pub others: f64,
    /// Hypervisor steal on those cores, as a share of the wall time.
    pub steal: f64,
}

impl Usage {
    /// The usage between `before` and `after`. With `pinning`, other processes are counted on
    /// the two pinned cores; without, on all cores.
    pub fn between(before: &Snapshot, after: &Snapshot, pinning: Option<Pinning>) -> Usage {
        let ticks = clock_ticks();
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        let server_seconds = match (before.server, after.server) {
            (Some(b), Some(a)) => a.saturating_sub(b) as f64 / ticks,
            _ => f64::NAN,
        };
        let generator_seconds = ((after.own.0 - before.own.0) + (after.own.1 - before.own.1)) / 1e6;
        let cores: Vec<usize> = match pinning {
            Some(p) => vec![p.server, p.generator],
            None => vec![before.cores.len().saturating_sub(1)],
        };
        let delta = |f: fn(&CoreTimes) -> u64| -> f64 {
            cores
                .iter()
                .map(|&c| {
                    let b = before.cores.get(c).map_or(0, f);
                    let a = after.cores.get(c).map_or(0, f);
                    a.saturating_sub(b) as f64 / ticks
                })
                .sum()
        };
        let busy = delta(|c| c.busy);
        let steal = delta(|c| c.steal);
        let ours = if server_seconds.is_finite() {
            server_seconds + generator_seconds
        } else {
            generator_seconds
        };
        let share = |value: f64| {
            if seconds > 0.0 {
                value.max(0.0) / seconds
            } else {
                0.0
            }
        };
        Usage {
            seconds,
            server_seconds,
            generator_seconds,
            others: share(busy - ours),
            steal: share(steal),
        }
    }

    /// Whether other load took enough CPU that the run measured the machine rather than the
    /// server: more than `limit` of a core, counting steal.
    pub fn disturbed(&self, limit: f64) -> bool {
        self.others + self.steal > limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(seconds: f64, server: u64, cores: &[(u64, u64)], own: (f64, f64)) -> Snapshot {
        let epoch = Instant::now();
        Snapshot {
            at: epoch + std::time::Duration::from_secs_f64(seconds),
            server: Some(server),
            cores: cores
                .iter()
                .map(|&(busy, steal)| CoreTimes { busy, steal })
                .collect(),
            own,
        }
    }

    #[test]
    fn counts_what_others_took_from_the_pinned_cores() {
        let ticks = clock_ticks();
        let t = |seconds: f64| (seconds * ticks) as u64;
        // Cores 0, 1 and 2, then the total. Over 2 seconds the server used 1.8 s on core 0, the
        // generator 1.0 s on core 1; core 0 was busy 1.9 s and core 1 1.5 s, with 0.1 s of steal.
        let before = snapshot(0.0, t(10.0), &[(0, 0), (0, 0), (0, 0), (0, 0)], (0.0, 0.0));
        let after = snapshot(
            2.0,
            t(11.8),
            &[(t(1.9), t(0.1)), (t(1.5), 0), (t(2.0), 0), (t(5.4), t(0.1))],
            (0.4e6, 0.6e6),
        );
        let pinned = Pinning {
            server: 0,
            generator: 1,
        };
        let usage = Usage::between(&before, &after, Some(pinned));
        assert!((usage.server_seconds - 1.8).abs() < 0.02);
        assert!((usage.generator_seconds - 1.0).abs() < 1e-9);
        // 3.4 s busy on the two cores, 2.8 s of it ours: 0.6 s over 2 s.
        assert!((usage.others - 0.3).abs() < 0.02, "{usage:?}");
        assert!((usage.steal - 0.05).abs() < 0.01);
        assert!(usage.disturbed(0.1) && !usage.disturbed(0.5));
        // Unpinned, core 2's load counts too: 5.4 s busy in all.
        let usage = Usage::between(&before, &after, None);
        assert!((usage.others - 1.3).abs() < 0.02, "{usage:?}");
    }

    #[test]
    fn reads_this_process() {
        assert!(process_ticks(std::process::id()).is_some());
        assert!(clock_ticks() >= 1.0);
        let cores = core_times();
        assert!(cores.len() >= 2, "at least one core and the total");
    }
}
