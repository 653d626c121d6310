//! What the simulation ran on and what it cost: CPU model and cores from
//! `/proc/cpuinfo`, memory from `/proc/meminfo`, process CPU time from
//! `/proc/self/stat` and peak resident memory from `/proc/self/status`.

use serde::Serialize;

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub model: String,
    /// Logical cores.
    pub cores: usize,
    /// Total memory, MiB.
    pub memory_mb: u64,
    /// Kernel release.
    pub kernel: String,
}

/// Reads the machine description (empty fields where /proc is missing).
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let cores = match cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
    {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        counted => counted,
    };
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    Machine {
        model,
        cores,
        memory_mb,
        kernel,
    }
}

/// User + system CPU seconds of this process so far (all threads).
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu(&stat).map(|(_, seconds)| seconds))
        .unwrap_or(0.0)
}

/// The command name and user + system CPU seconds of a `/proc/…/stat` line.
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    // USER_HZ is 100 on every Linux ABI.
    const TICKS_PER_SECOND: f64 = 100.0;
    // The command name is in parentheses and may hold spaces.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // The fields after it start at field 3 (state); utime and stime are
    // fields 14 and 15.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((
        stat.get(open + 1..close)?,
        (ticks(11) + ticks(12)) / TICKS_PER_SECOND,
    ))
}

/// Peak resident memory (VmHWM) in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the peak resident memory mark so the next phase measures its own.
pub fn reset_peak_rss() {
    // Best effort: "5" resets VmHWM (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// User + system CPU seconds of this process's live threads so far, by
/// thread name with trailing digits and dashes cut (`sled-io-3` counts as
/// `sled-io`). Threads that have exited are not counted.
pub fn cpu_seconds_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, seconds)) = stat_cpu(&stat) else {
            continue;
        };
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        *by_name.entry(name.to_string()).or_insert(0.0) += seconds;
    }
    by_name
}

/// `after - before`, per thread name, largest first.
pub fn cpu_delta(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> Vec<(String, f64)> {
    let mut delta: Vec<(String, f64)> = after
        .iter()
        .map(|(name, &s)| (name.clone(), s - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, s)| *s > 0.0)
        .collect();
    delta.sort_by(|a, b| b.1.total_cmp(&a.1));
    delta
}
