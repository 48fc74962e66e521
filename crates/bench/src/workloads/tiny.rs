//! Workload 5b, tiny: the fixed latency of a job — 200 consecutive
//! `parallelize(1..=10, 2).count()` jobs, each timed. `tiny_job_median` is
//! the median latency, `tiny_200_jobs_total` their sum. Valid when every
//! count is 10.
//!
//! The native version runs each 2-task job on the long-lived 2-thread
//! [`Pool`].

use super::sched::{pool_count, Pool};
use crate::harness::{fmt_value, median, Measurement};
use ember::Context;
use std::time::Instant;

pub const JOBS: usize = 200;

fn results(lat: &mut [f64], ok: bool) -> Vec<Measurement> {
    lat.sort_by(f64::total_cmp);
    let med = median(lat);
    let p90 = lat[(lat.len() * 9) / 10 - 1];
    vec![
        Measurement::new(
            "tiny_job_median",
            med,
            "ms",
            format!(
                "min={} p90={} max={} valid={ok}",
                fmt_value(lat[0]),
                fmt_value(p90),
                fmt_value(lat[lat.len() - 1])
            ),
        ),
        Measurement::new("tiny_200_jobs_total", lat.iter().sum(), "ms", format!("valid={ok}")),
    ]
}

fn measure(mut job: impl FnMut() -> anyhow::Result<u64>) -> anyhow::Result<Vec<Measurement>> {
    let mut lat = Vec::with_capacity(JOBS);
    let mut ok = true;
    for _ in 0..JOBS {
        let t0 = Instant::now();
        let c = job()?;
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        ok &= c == 10;
    }
    Ok(results(&mut lat, ok))
}

/// The engine version.
pub fn ember(sc: &Context) -> anyhow::Result<Vec<Measurement>> {
    measure(|| Ok(sc.parallelize((1..=10i32).collect::<Vec<_>>(), 2).count()?))
}

/// The native version.
pub fn native(pool: &Pool) -> anyhow::Result<Vec<Measurement>> {
    measure(|| Ok(pool_count(pool, (1..=10).collect(), 2)))
}
