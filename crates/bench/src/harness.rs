//! Measurement plumbing shared by every workload: timed values, the
//! `RESULT`/`SUMMARY` lines, and peak-RSS tracking through `/proc`.

use std::collections::BTreeMap;
use std::time::Instant;

/// One measured value of one run.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub metric: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// Free-form `key=value` pairs; always ends with `valid=true|false`.
    pub info: String,
}

impl Measurement {
    pub fn new(metric: &'static str, value: f64, unit: &'static str, info: impl Into<String>) -> Self {
        Measurement { metric, value, unit, info: info.into() }
    }

    /// Whether the run this value came from passed its validation.
    pub fn valid(&self) -> bool {
        self.info.split_whitespace().any(|kv| kv == "valid=true")
    }
}

/// A measured value as printed: three decimals from 1 up, four significant
/// digits below. A tiny job takes a few microseconds, so at three decimals
/// of a millisecond one unit of the last digit was 7–15% of the value and
/// ratios between such values were too coarse to compare.
pub fn fmt_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || v.abs() >= 1.0 {
        return format!("{v:.3}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).max(3) as usize;
    format!("{v:.decimals$}")
}

/// Milliseconds since `t0`.
pub fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// Milliseconds between two instants.
pub fn ms_between(t0: Instant, t1: Instant) -> f64 {
    t1.duration_since(t0).as_secs_f64() * 1e3
}

/// Median of a non-empty slice (mean of the middle two for even lengths).
pub fn median(values: &[f64]) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Collects the timed runs of one workload and prints its summary.
#[derive(Default)]
pub struct Collector {
    per_metric: BTreeMap<(usize, &'static str), (Vec<f64>, &'static str)>,
    order: usize,
    pub all_valid: bool,
    runs: usize,
}

impl Collector {
    pub fn new() -> Self {
        Collector { all_valid: true, ..Default::default() }
    }

    /// Prints `RESULT` lines for one timed run and records its values.
    pub fn record(&mut self, workload: &str, run: usize, ms: &[Measurement]) {
        self.runs += 1;
        for m in ms {
            println!("RESULT {workload} {} run={run} value={} {} {}", m.metric, fmt_value(m.value), m.unit, m.info);
            self.all_valid &= m.valid();
            let key = match self.per_metric.keys().find(|(_, name)| *name == m.metric) {
                Some(k) => *k,
                None => {
                    self.order += 1;
                    (self.order, m.metric)
                }
            };
            self.per_metric.entry(key).or_insert_with(|| (Vec::new(), m.unit)).0.push(m.value);
        }
    }

    /// Prints one `SUMMARY` line per metric, in first-seen order.
    pub fn summarize(&self, workload: &str) -> Vec<(String, f64, f64, f64, String)> {
        let mut out = Vec::new();
        for ((_, metric), (values, unit)) in &self.per_metric {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let med = median(values);
            println!(
                "SUMMARY {workload} {metric} n={} min={} median={} max={} {unit}",
                values.len(),
                fmt_value(min),
                fmt_value(med),
                fmt_value(max)
            );
            out.push((metric.to_string(), min, med, max, unit.to_string()));
        }
        out
    }
}

/// A field of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`, ...).
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    status_field("/proc/self/status", field)
}

fn status_field(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The process's peak resident set size so far (`VmHWM`).
pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM")
}

/// Another process's peak resident set size (`VmHWM`), e.g. an executor's.
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmHWM")
}

/// Resets `VmHWM` to the current RSS (Linux `clear_refs` value 5), so the
/// next [`peak_rss`] is the peak of what runs after this call. Returns
/// whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// [`reset_peak_rss`] for another process of the same user.
pub fn reset_peak_rss_of(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The first three fields of `/proc/loadavg` (1, 5, 15 minutes), to show how
/// busy the machine was around a measurement.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(","))
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_keep_four_significant_digits() {
        assert_eq!(fmt_value(4729.3941), "4729.394");
        assert_eq!(fmt_value(1.0), "1.000");
        assert_eq!(fmt_value(0.5), "0.5000");
        assert_eq!(fmt_value(0.0072346), "0.007235");
        assert_eq!(fmt_value(0.012), "0.01200");
        assert_eq!(fmt_value(0.0), "0.000");
    }

    #[test]
    fn peak_rss_of_a_pid_reads_the_same_field_as_self() {
        let me = std::process::id();
        let own = peak_rss().expect("VmHWM of this process");
        let by_pid = peak_rss_of(me).expect("VmHWM by pid");
        assert!(own > 0 && by_pid >= own / 2 && by_pid <= own * 2, "{own} vs {by_pid}");
        assert!(peak_rss_of(u32::MAX).is_none());
    }
}
